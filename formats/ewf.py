"""EWF-E01 (EnCase 6 style) binary structures: parse and build.

Ground truth: libyal/libewf "Expert Witness Compression Format (EWF)" and measurements of
ewfacquire 20140813 output (../shared/specs/ewf-e01.md). All integers are little-endian and
every checksum is Adler-32 seeded with 1 (``zlib.adler32``).

This module holds the file header, section descriptor, volume/data, table/table2, hash,
digest and error2 sections, the chunk codec and segment naming. The text of the
header/header2 sections lives in formats.ewf_header.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from construct import (
    Bytes,
    ConstructError,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Padding,
    Struct,
)

from formats.errors import BadMagic, ChecksumMismatch, FormatError, InvalidField, Truncated

SIGNATURE = b"EVF\x09\x0d\x0a\xff\x00"
FILE_HEADER_SIZE = 13
DESCRIPTOR_SIZE = 76
VOLUME_SIZE = 1052
TABLE_HEADER_SIZE = 24
HASH_SIZE = 36
DIGEST_SIZE = 80
ERROR2_HEADER_SIZE = 520
OFFSET_MASK = 0x7FFFFFFF
COMPRESSED_FLAG = 0x80000000
MAX_TABLE_ENTRIES = 16375          # the EnCase 2-5 limit, so every reader accepts our tables

MEDIA_REMOVABLE, MEDIA_FIXED, MEDIA_OPTICAL, MEDIA_MEMORY = 0x00, 0x01, 0x03, 0x10
FLAG_IMAGE, FLAG_PHYSICAL, FLAG_FASTBLOC, FLAG_TABLEAU = 0x01, 0x02, 0x04, 0x08
LEVEL_NONE, LEVEL_FAST, LEVEL_BEST = 0, 1, 2


def adler32(data: bytes | memoryview) -> int:
    """Adler-32 with libewf's seed of 1 (the zlib default)."""
    return zlib.adler32(data) & 0xFFFFFFFF


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise Truncated(what, size, len(data))


def _check(data: bytes, size: int, what: str) -> None:
    """Verify the Adler-32 stored right after the first ``size`` bytes of ``data``."""
    _need(data, size + 4, what)
    stored = int.from_bytes(data[size:size + 4], "little")
    actual = adler32(data[:size])
    if stored != actual:
        raise ChecksumMismatch(what, expected=stored, actual=actual)


def _sealed(body: bytes) -> bytes:
    return body + adler32(body).to_bytes(4, "little")


def _parse(schema: Struct, data: bytes, what: str) -> Any:
    try:
        return schema.parse(data)
    except ConstructError as err:  # a schema that does not fit is a malformed field
        raise InvalidField(what, "layout", len(data), str(err)) from err


# -- file header ---------------------------------------------------------------------------

FILE_HEADER = Struct("signature" / Bytes(8), "start_of_fields" / Int8ul,
                     "segment_number" / Int16ul, "end_of_fields" / Int16ul)


@dataclass(frozen=True)
class FileHeader:
    """The 13 bytes that start every segment file."""

    segment_number: int


def parse_file_header(data: bytes) -> FileHeader:
    """Parse the segment file header (needs the first 13 bytes)."""
    _need(data, FILE_HEADER_SIZE, "EWF file header")
    c = _parse(FILE_HEADER, data[:FILE_HEADER_SIZE], "EWF file header")
    if c.signature != SIGNATURE:
        raise BadMagic("EWF file header", SIGNATURE, bytes(c.signature))
    if c.segment_number < 1:
        raise InvalidField("EWF file header", "segment_number", c.segment_number, "must be >= 1")
    return FileHeader(c.segment_number)


def build_file_header(header: FileHeader) -> bytes:
    return FILE_HEADER.build({"signature": SIGNATURE, "start_of_fields": 1,
                                  "segment_number": header.segment_number, "end_of_fields": 0})


# -- section descriptor ---------------------------------------------------------------------

DESCRIPTOR = Struct("type" / PaddedString(16, "ascii"), "next_offset" / Int64ul,
                    "size" / Int64ul, Padding(40), "checksum" / Int32ul)


@dataclass(frozen=True)
class SectionDescriptor:
    """76 bytes before every section. ``next_offset`` is from the start of the segment file;
    ``size`` includes the descriptor (0 for next/done, as EnCase writes)."""

    type: str
    next_offset: int
    size: int


def parse_section_descriptor(data: bytes, offset: int = 0) -> SectionDescriptor:
    """Parse and checksum-verify a descriptor; ``offset`` only names the place in errors."""
    what = f"EWF section descriptor at offset {offset}"
    _check(data, DESCRIPTOR_SIZE - 4, what)
    c = _parse(DESCRIPTOR, data[:DESCRIPTOR_SIZE], what)
    return SectionDescriptor(c.type, c.next_offset, c.size)


def build_section_descriptor(desc: SectionDescriptor) -> bytes:
    body = DESCRIPTOR.build({"type": desc.type, "next_offset": desc.next_offset,
                                 "size": desc.size, "checksum": 0})[:DESCRIPTOR_SIZE - 4]
    return _sealed(body)


# -- volume / data / disk ---------------------------------------------------------------------

VOLUME = Struct(
    "media_type" / Int8ul, Padding(3), "chunk_count" / Int32ul,
    "sectors_per_chunk" / Int32ul, "bytes_per_sector" / Int32ul, "sector_count" / Int64ul,
    "cylinders" / Int32ul, "heads" / Int32ul, "sectors" / Int32ul,
    "media_flags" / Int8ul, Padding(3), "palm_start_sector" / Int32ul, Padding(4),
    "smart_start_sector" / Int32ul, "compression_level" / Int8ul, Padding(3),
    "error_granularity" / Int32ul, Padding(4), "set_guid" / Bytes(16), Padding(963),
    "signature" / Bytes(5), "checksum" / Int32ul)


@dataclass(frozen=True)
class Volume:
    """The media values (volume section; the data section is a byte copy of it)."""

    chunk_count: int
    sectors_per_chunk: int
    bytes_per_sector: int
    sector_count: int
    media_type: int = MEDIA_FIXED
    media_flags: int = FLAG_IMAGE | FLAG_PHYSICAL
    compression_level: int = LEVEL_FAST
    error_granularity: int = 64
    set_guid: bytes = bytes(16)
    cylinders: int = 0
    heads: int = 0
    sectors: int = 0
    palm_start_sector: int = 0
    smart_start_sector: int = 0

    @property
    def chunk_bytes(self) -> int:
        return self.sectors_per_chunk * self.bytes_per_sector


def parse_volume(payload: bytes, what: str = "EWF volume section") -> Volume:
    """Parse a 1052-byte EnCase volume/data/disk payload, or the 94-byte SMART variant."""
    if 94 <= len(payload) < VOLUME_SIZE:
        return _parse_smart_volume(payload, what)
    _check(payload, VOLUME_SIZE - 4, what)
    c = _parse(VOLUME, payload[:VOLUME_SIZE], what)
    fields = {k: v for k, v in c.items() if k in Volume.__dataclass_fields__}
    fields["set_guid"] = bytes(c.set_guid)
    return _validated(Volume(**fields), what)


def _parse_smart_volume(payload: bytes, what: str) -> Volume:
    _check(payload, 90, what)
    chunks, spc, bps, sectors = struct.unpack_from("<4xIIII", payload)
    return _validated(Volume(chunks, spc, bps, sectors, compression_level=LEVEL_FAST), what)


def _validated(vol: Volume, what: str) -> Volume:
    if vol.bytes_per_sector <= 0 or vol.bytes_per_sector % 512 and vol.bytes_per_sector != 2048:
        raise InvalidField(what, "bytes_per_sector", vol.bytes_per_sector, "not a sector size")
    if not 1 <= vol.sectors_per_chunk <= 32768:
        raise InvalidField(what, "sectors_per_chunk", vol.sectors_per_chunk, "not 1..32768")
    need = -(-vol.sector_count // vol.sectors_per_chunk)
    if vol.chunk_count != need:
        raise InvalidField(what, "chunk_count", vol.chunk_count,
                           f"{vol.sector_count} sectors need {need} chunks")
    return vol


def build_volume(vol: Volume) -> bytes:
    """The 1052-byte volume (or data) section payload."""
    fields = {k: getattr(vol, k) for k in Volume.__dataclass_fields__}
    body = VOLUME.build(dict(fields, signature=bytes(5), checksum=0))
    return _sealed(body[:VOLUME_SIZE - 4])


# -- table / table2 ----------------------------------------------------------------------------

TABLE_HEADER = Struct("entry_count" / Int32ul, Padding(4), "base_offset" / Int64ul, Padding(4),
                      "checksum" / Int32ul)


@dataclass(frozen=True)
class Table:
    """Chunk offsets of one sectors section. Entry bit 31 = compressed; bits 0..30 = offset
    relative to ``base_offset`` (the file offset of the sectors section descriptor)."""

    base_offset: int
    entries: tuple[int, ...]


def table_entry(offset: int, compressed: bool) -> int:
    """One table entry for a chunk ``offset`` bytes after the table base."""
    if not 0 <= offset <= OFFSET_MASK:
        raise InvalidField("EWF table entry", "offset", offset, "does not fit in 31 bits")
    return offset | (COMPRESSED_FLAG if compressed else 0)


def parse_table_header(data: bytes, what: str = "EWF table") -> tuple[int, int]:
    """(entry_count, base_offset) of a table payload, header checksum verified."""
    _check(data, TABLE_HEADER_SIZE - 4, f"{what} header")
    c = _parse(TABLE_HEADER, data[:TABLE_HEADER_SIZE], what)
    return c.entry_count, c.base_offset


def parse_table(payload: bytes, what: str = "EWF table") -> Table:
    """Parse a table/table2 payload: header, entry array and its checksum footer."""
    count, base = parse_table_header(payload, what)
    end = TABLE_HEADER_SIZE + 4 * count
    _need(payload, end + 4, f"{what} with {count} entries")
    array = payload[TABLE_HEADER_SIZE:end]
    stored = int.from_bytes(payload[end:end + 4], "little")
    if stored != adler32(array):
        raise ChecksumMismatch(f"{what} entries", expected=stored, actual=adler32(array))
    return Table(base, struct.unpack_from(f"<{count}I", array))


def build_table(table: Table) -> bytes:
    """A table (or table2) payload: 24-byte header, entries, Adler-32 of the entries."""
    header = TABLE_HEADER.build({"entry_count": len(table.entries),
                                     "base_offset": table.base_offset, "checksum": 0})
    array = struct.pack(f"<{len(table.entries)}I", *table.entries)
    return _sealed(header[:TABLE_HEADER_SIZE - 4]) + _sealed(array)


# -- hash / digest / error2 ---------------------------------------------------------------------

HASH = Struct("md5" / Bytes(16), "unknown" / Bytes(16), "checksum" / Int32ul)
DIGEST = Struct("md5" / Bytes(16), "sha1" / Bytes(20), Padding(40), "checksum" / Int32ul)
ERROR2_HEADER = Struct("entry_count" / Int32ul, Padding(512), "checksum" / Int32ul)


@dataclass(frozen=True)
class HashSection:
    """MD5 of the media data (16 bytes) and 16 bytes nobody has explained (zero from us)."""

    md5: bytes
    unknown: bytes = bytes(16)


@dataclass(frozen=True)
class Digest:
    """MD5 and SHA-1 of the media data (EnCase 6.12+)."""

    md5: bytes
    sha1: bytes


@dataclass(frozen=True)
class Error2:
    """Sector ranges that could not be read, as (first sector, sector count) pairs."""

    entries: tuple[tuple[int, int], ...]


def parse_hash(payload: bytes) -> HashSection:
    _check(payload, HASH_SIZE - 4, "EWF hash section")
    c = _parse(HASH, payload[:HASH_SIZE], "EWF hash section")
    return HashSection(bytes(c.md5), bytes(c.unknown))


def build_hash(value: HashSection) -> bytes:
    return _sealed(HASH.build({"md5": value.md5, "unknown": value.unknown, "checksum": 0})[:32])


def parse_digest(payload: bytes) -> Digest:
    _check(payload, DIGEST_SIZE - 4, "EWF digest section")
    c = _parse(DIGEST, payload[:DIGEST_SIZE], "EWF digest section")
    return Digest(bytes(c.md5), bytes(c.sha1))


def build_digest(value: Digest) -> bytes:
    return _sealed(DIGEST.build({"md5": value.md5, "sha1": value.sha1, "checksum": 0})[:76])


def parse_error2(payload: bytes) -> Error2:
    """Parse an error2 payload: 520-byte header, 8-byte entries, Adler-32 footer."""
    _check(payload, ERROR2_HEADER_SIZE - 4, "EWF error2 header")
    count = _parse(ERROR2_HEADER, payload[:ERROR2_HEADER_SIZE], "EWF error2").entry_count
    end = ERROR2_HEADER_SIZE + 8 * count
    _need(payload, end + 4, f"EWF error2 section with {count} entries")
    array = payload[ERROR2_HEADER_SIZE:end]
    stored = int.from_bytes(payload[end:end + 4], "little")
    if stored != adler32(array):
        raise ChecksumMismatch("EWF error2 entries", expected=stored, actual=adler32(array))
    flat = struct.unpack_from(f"<{2 * count}I", array)
    return Error2(tuple(zip(flat[0::2], flat[1::2])))


def build_error2(value: Error2) -> bytes:
    for first, count in value.entries:
        if not (0 <= first <= 0xFFFFFFFF and 0 < count <= 0xFFFFFFFF):
            raise InvalidField("EWF error2 entry", "range", (first, count), "not 32-bit")
    header = ERROR2_HEADER.build({"entry_count": len(value.entries), "checksum": 0})
    array = b"".join(struct.pack("<II", f, c) for f, c in value.entries)
    return _sealed(header[:ERROR2_HEADER_SIZE - 4]) + _sealed(array)


# -- segment names -------------------------------------------------------------------------------

def segment_extension(number: int, first: str = "E") -> str:
    """libewf's name for segment ``number``: E01..E99, then EAA..EZZ, FAA.. up to ZZZ."""
    if number < 1:
        raise InvalidField("EWF segment", "number", number, "must be >= 1")
    if number <= 99:
        return f"{first}{number:02d}"
    index = number - 100
    a = ord("A") if first.isupper() else ord("a")
    lead = ord(first) + index // 676
    if lead > a + 25:
        raise InvalidField("EWF segment", "number", number, "beyond the last name (ZZZ)")
    return chr(lead) + chr(a + index // 26 % 26) + chr(a + index % 26)


def segment_number(extension: str) -> int:
    """Inverse of segment_extension (case-insensitive); raises FormatError if not a name."""
    ext = extension.upper()
    if len(ext) == 3 and ext[0].isalpha() and ext[1:].isdigit() and ext[1:] != "00":
        return int(ext[1:])
    if len(ext) == 3 and ext.isalpha() and ext.isascii() and ext[0] >= "E":
        letters = [ord(c) - ord("A") for c in ext]
        return 100 + (letters[0] - 4) * 676 + letters[1] * 26 + letters[2]
    raise FormatError(f"EWF segment: {extension!r} is not a segment file extension")
