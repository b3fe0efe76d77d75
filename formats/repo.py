"""On-disk records of the snapshot repository (docs/REPOSITORY.md), bytes in and out.

Three records live here, all versioned:

* the **pack header** and **chunk record header** (``packs/<pp>/<pack-id>.pack``): a pack is a
  16-byte header followed by records, each a 48-byte header (digest, lengths, compression) and
  the stored (zstd-compressed) bytes;
* the **pack index** (``index/<pack-id>.idx``): one entry per record of one pack, with a
  sha256 trailer over the whole file so a torn or altered index is detected;
* the **snapshot document** (``snapshots/<id>.json``): canonical JSON with a sha256 of itself.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from formats.errors import BadMagic, ChecksumMismatch, InvalidField, Truncated

FORMAT_MAJOR = 1
FORMAT_MINOR = 0
DIGEST_SIZE = 32  # sha256 of the uncompressed chunk

PACK_MAGIC = b"IMGRPACK"
PACK_HEADER = struct.Struct("<8sHH4x")            # magic, major, minor, reserved
RECORD_MAGIC = b"CHNK"
RECORD_HEADER = struct.Struct("<4sIII32s")        # magic, flags, raw_len, stored_len, digest
INDEX_MAGIC = b"IMGRIDX\0"
INDEX_HEADER = struct.Struct("<8sHH16sIQ")        # magic, major, minor, pack id, count, pack size
INDEX_ENTRY = struct.Struct("<32sQIII")           # digest, offset, raw_len, stored_len, flags

FLAG_ZSTD = 1       # stored bytes are one zstd frame; otherwise stored as-is
SNAPSHOT_FORMAT = "imager-snapshot"


@dataclass(frozen=True)
class RecordHeader:
    """The header in front of one chunk in a pack."""

    digest: bytes
    raw_len: int
    stored_len: int
    flags: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_ZSTD)


@dataclass(frozen=True)
class IndexEntry:
    """Where one chunk lives: ``offset`` is the record header's offset in the pack."""

    digest: bytes
    offset: int
    raw_len: int
    stored_len: int
    flags: int

    @property
    def record_size(self) -> int:
        return RECORD_HEADER.size + self.stored_len


@dataclass(frozen=True)
class PackIndex:
    """The index of one pack."""

    pack_id: str            # 32 lowercase hex digits
    pack_size: int          # bytes of the pack the index describes
    entries: tuple[IndexEntry, ...]


def build_pack_header() -> bytes:
    """The 16 bytes every pack starts with."""
    return PACK_HEADER.pack(PACK_MAGIC, FORMAT_MAJOR, FORMAT_MINOR)


def parse_pack_header(data: bytes) -> tuple[int, int]:
    """(major, minor) of a pack header; raises BadMagic/Truncated/InvalidField."""
    if len(data) < PACK_HEADER.size:
        raise Truncated("pack header", PACK_HEADER.size, len(data))
    magic, major, minor = PACK_HEADER.unpack_from(data)
    if magic != PACK_MAGIC:
        raise BadMagic("pack header", PACK_MAGIC, magic)
    if major != FORMAT_MAJOR:
        raise InvalidField("pack header", "major", major, f"this reader knows {FORMAT_MAJOR}")
    return major, minor


def build_record_header(header: RecordHeader) -> bytes:
    """The 48-byte record header."""
    return RECORD_HEADER.pack(RECORD_MAGIC, header.flags, header.raw_len, header.stored_len,
                              header.digest)


def parse_record_header(data: bytes, where: str = "chunk record") -> RecordHeader:
    """Parse a record header; ``where`` names it in errors (pack and offset)."""
    if len(data) < RECORD_HEADER.size:
        raise Truncated(where, RECORD_HEADER.size, len(data))
    magic, flags, raw_len, stored_len, digest = RECORD_HEADER.unpack_from(data)
    if magic != RECORD_MAGIC:
        raise BadMagic(where, RECORD_MAGIC, magic)
    return RecordHeader(digest, raw_len, stored_len, flags)


def build_index(index: PackIndex) -> bytes:
    """Serialise a pack index with its sha256 trailer."""
    parts = [INDEX_HEADER.pack(INDEX_MAGIC, FORMAT_MAJOR, FORMAT_MINOR,
                               bytes.fromhex(index.pack_id), len(index.entries), index.pack_size)]
    parts += [INDEX_ENTRY.pack(e.digest, e.offset, e.raw_len, e.stored_len, e.flags)
              for e in index.entries]
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def parse_index(data: bytes, where: str = "pack index") -> PackIndex:
    """Parse and verify a pack index (trailer digest, entry count, bounds)."""
    if len(data) < INDEX_HEADER.size + DIGEST_SIZE:
        raise Truncated(where, INDEX_HEADER.size + DIGEST_SIZE, len(data))
    magic, major, _minor, pack_id, count, pack_size = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC:
        raise BadMagic(where, INDEX_MAGIC, magic)
    if major != FORMAT_MAJOR:
        raise InvalidField(where, "major", major, f"this reader knows {FORMAT_MAJOR}")
    need = INDEX_HEADER.size + count * INDEX_ENTRY.size + DIGEST_SIZE
    if len(data) != need:
        raise Truncated(where, need, len(data))
    body, trailer = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
    actual = hashlib.sha256(body).digest()
    if actual != trailer:
        raise ChecksumMismatch(where, expected=trailer.hex(), actual=actual.hex())
    entries = tuple(IndexEntry(*INDEX_ENTRY.unpack_from(data, INDEX_HEADER.size + i * INDEX_ENTRY.size))
                    for i in range(count))
    for e in entries:
        if e.offset < PACK_HEADER.size or e.offset + e.record_size > pack_size:
            raise InvalidField(where, "offset", e.offset, f"record outside the pack's {pack_size} bytes")
    return PackIndex(pack_id.hex(), pack_size, entries)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def build_snapshot(doc: dict[str, Any]) -> bytes:
    """Serialise a snapshot document, adding ``format``/``version``/``checksum``."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    body["format"] = SNAPSHOT_FORMAT
    body["version"] = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
    body["checksum"] = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    return _canonical(body) + b"\n"


def parse_snapshot(data: bytes, where: str = "snapshot") -> dict[str, Any]:
    """Parse a snapshot document and check its self-checksum and version."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidField(where, "json", len(data), str(err)) from err
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise BadMagic(where, SNAPSHOT_FORMAT, doc.get("format") if isinstance(doc, dict) else doc)
    major = str(doc.get("version", "")).split(".")[0]
    if major != str(FORMAT_MAJOR):
        raise InvalidField(where, "version", doc.get("version"), f"this reader knows {FORMAT_MAJOR}.x")
    stored = doc.get("checksum", "")
    body = {k: v for k, v in doc.items() if k != "checksum"}
    actual = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    if stored != actual:
        raise ChecksumMismatch(where, expected=stored, actual=actual)
    return doc
