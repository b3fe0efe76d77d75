"""The repository on disk: its directories, config, pack indexes and chunk reads.

Every file that is published is written to a temporary name, fsynced, renamed into place and
its directory fsynced, so a crash leaves either the old state or the new one (docs/REPOSITORY.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from formats.errors import ChecksumMismatch, FormatError, InvalidField
from formats.repo import (
    FLAG_ZSTD,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    RECORD_HEADER,
    IndexEntry,
    PackIndex,
    parse_index,
    parse_record_header,
)
from imager.durable import fsync_dir, write_atomic
from imager.errors import BadInput, UsageError

log = logging.getLogger(__name__)

REPO_FORMAT = "imager-repo"
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_PACK_SIZE = 16 << 20




@dataclass(frozen=True)
class Location:
    """Where a chunk lives."""

    pack_id: str
    entry: IndexEntry


class Repository:
    """An open repository directory: config, the merged index of every pack, chunk reads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self._load_config()
        self.chunk_size: int = int(self.config["chunk_size"])
        self.pack_size: int = int(self.config.get("pack_size", DEFAULT_PACK_SIZE))
        self.index: dict[bytes, Location] = {}
        self.pack_indexes: dict[str, PackIndex] = {}
        self._fds: dict[str, int] = {}
        self._dctx = zstandard.ZstdDecompressor()
        self.reload_index()

    # -- creation and layout -------------------------------------------------------------
    @classmethod
    def init(cls, path: str | Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
             pack_size: int = DEFAULT_PACK_SIZE) -> Repository:
        """Create an empty repository at ``path`` (a new or empty directory).

        A new directory is built under a temporary name and renamed into place, so a crash
        never leaves a half-made repository that a re-run would refuse.
        """
        root = Path(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UsageError(f"{root}: exists and is not an empty directory or a repository")
        if chunk_size <= 0 or chunk_size % 4096:
            raise UsageError(f"chunk size {chunk_size} is not a positive multiple of 4096")
        root.parent.mkdir(parents=True, exist_ok=True)
        build = root if root.exists() else root.with_name(f".{root.name}.{uuid.uuid4().hex[:8]}.tmp")
        build.mkdir(exist_ok=True)
        for sub in ("packs", "index", "snapshots", "tmp"):
            (build / sub).mkdir(exist_ok=True)
        config = {"format": REPO_FORMAT, "version": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
                  "repo_id": uuid.uuid4().hex, "chunk_size": chunk_size, "pack_size": pack_size,
                  "digest": "sha256", "compression": "zstd"}
        fsync_dir(build)
        write_atomic(build / "config.json", json.dumps(config, indent=1).encode() + b"\n")
        if build != root:
            try:
                os.rename(build, root)
            except OSError:  # another process created it first: use theirs
                shutil.rmtree(build, ignore_errors=True)
                return cls(root)
            fsync_dir(root.parent)
        return cls(root)

    @classmethod
    def open_or_init(cls, path: str | Path, **options: Any) -> Repository:
        """Open ``path``, creating the repository first when it does not exist yet."""
        root = Path(path)
        if (root / "config.json").exists():
            return cls(root)
        return cls.init(root, **options)

    def _load_config(self) -> dict[str, Any]:
        cfg = self.path / "config.json"
        try:
            config = json.loads(cfg.read_text())
        except FileNotFoundError as err:
            raise BadInput(f"{self.path}: not an imager repository (no config.json)") from err
        except (OSError, ValueError) as err:
            raise BadInput(f"{cfg}: unreadable repository config: {err}") from err
        if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
            raise BadInput(f"{cfg}: not an imager repository config")
        major = str(config.get("version", "")).split(".")[0]
        if major != str(FORMAT_MAJOR):
            raise BadInput(f"{cfg}: repository format {config.get('version')} is not supported "
                           f"(this imager reads {FORMAT_MAJOR}.x)")
        return config

    def pack_path(self, pack_id: str) -> Path:
        return self.path / "packs" / pack_id[:2] / f"{pack_id}.pack"

    def index_path(self, pack_id: str) -> Path:
        return self.path / "index" / f"{pack_id}.idx"

    def pack_ids_on_disk(self) -> set[str]:
        """Every published pack file's id (indexed or not)."""
        return {p.stem for p in (self.path / "packs").glob("*/*.pack")}

    # -- index ------------------------------------------------------------------------------
    def reload_index(self) -> None:
        """Read every pack index. A damaged one is recorded in ``index_errors``, not fatal:
        readers still reach every other chunk, and check/prune report or refuse."""
        self.index.clear()
        self.pack_indexes.clear()
        self.index_errors: dict[str, FormatError] = {}
        for idx_path in sorted((self.path / "index").glob("*.idx")):
            try:
                parsed = self.read_pack_index(idx_path)
            except FormatError as err:
                log.warning("damaged pack index: %s", err)
                self.index_errors[idx_path.stem] = err
                continue
            self.add_pack_index(parsed)

    def read_pack_index(self, idx_path: Path) -> PackIndex:
        """Parse one index file and check it names the pack it is filed under."""
        parsed = parse_index(idx_path.read_bytes(), where=f"pack index {idx_path}")
        if parsed.pack_id != idx_path.stem:
            raise InvalidField(f"pack index {idx_path}", "pack id", parsed.pack_id,
                               "differs from the file name")
        return parsed

    def add_pack_index(self, parsed: PackIndex) -> None:
        """Make a (durable) pack index's chunks known to this process."""
        self.pack_indexes[parsed.pack_id] = parsed
        for entry in parsed.entries:
            # a chunk in two packs (a prune interrupted after writing its new index): either copy is good
            self.index.setdefault(entry.digest, Location(parsed.pack_id, entry))

    def has_chunk(self, digest: bytes) -> bool:
        return digest in self.index

    # -- chunk reads ------------------------------------------------------------------------
    def _fd(self, pack_id: str) -> int:
        fd = self._fds.get(pack_id)
        if fd is None:
            fd = self._fds[pack_id] = os.open(self.pack_path(pack_id), os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def read_stored(self, pack_id: str, entry: IndexEntry) -> bytes:
        """The stored (compressed) bytes of one record, after checking its header."""
        where = self.where(pack_id, entry)
        raw = os.pread(self._fd(pack_id), entry.record_size, entry.offset)
        head = parse_record_header(raw[:RECORD_HEADER.size], where)
        if (head.digest, head.raw_len, head.stored_len, head.flags) != (
                entry.digest, entry.raw_len, entry.stored_len, entry.flags):
            raise InvalidField(where, "record header", head.digest.hex()[:16],
                               "does not match the index entry")
        if len(raw) != entry.record_size:
            raise InvalidField(where, "length", len(raw), f"pack ends before {entry.record_size} bytes")
        return raw[RECORD_HEADER.size:]

    @staticmethod
    def where(pack_id: str, entry: IndexEntry) -> str:
        """How errors name a chunk: digest, pack and offset."""
        return f"chunk {entry.digest.hex()} in pack {pack_id} at offset {entry.offset}"

    def read_record(self, pack_id: str, entry: IndexEntry) -> bytes:
        """The uncompressed bytes of one record, checked against its digest.

        Raises:
            ChecksumMismatch: the decompressed bytes do not hash to the digest.
            FormatError: the record header or the zstd frame is damaged.
        """
        stored = self.read_stored(pack_id, entry)
        where = self.where(pack_id, entry)
        data = self._decompress(stored, entry, where) if entry.flags & FLAG_ZSTD else stored
        actual = hashlib.sha256(data).digest()
        if actual != entry.digest or len(data) != entry.raw_len:
            raise ChecksumMismatch(where, expected=entry.digest.hex(), actual=actual.hex())
        return data

    def _decompress(self, stored: bytes, entry: IndexEntry, where: str) -> bytes:
        try:
            return self._dctx.decompress(stored, max_output_size=entry.raw_len)
        except zstandard.ZstdError as err:
            raise ChecksumMismatch(f"{where} (zstd: {err})", expected=entry.digest.hex(),
                                   actual="undecodable") from err

    def read_chunk(self, digest: bytes) -> bytes:
        """The bytes of the chunk with this digest (verified)."""
        loc = self.index.get(digest)
        if loc is None:
            raise FormatError(f"{self.path}: chunk {digest.hex()} is not in the repository index")
        return self.read_record(loc.pack_id, loc.entry)

    def close(self) -> None:
        """Close cached pack file descriptors."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def forget_fd(self, pack_id: str) -> None:
        fd = self._fds.pop(pack_id, None)
        if fd is not None:
            os.close(fd)
