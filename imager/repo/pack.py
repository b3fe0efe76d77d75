"""Writing packs: chunk records appended to a temporary file, then published with their index.

Publication order is what makes a crash harmless: the pack is fsynced and renamed into
``packs/`` first, then its index is written durably into ``index/``. A chunk is known to the
repository only through a durable index, and a snapshot is published only after the indexes of
every chunk it references, so a crash leaves at worst an unindexed pack (garbage for prune).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

import zstandard

from formats.repo import (
    FLAG_ZSTD,
    IndexEntry,
    PackIndex,
    RecordHeader,
    build_index,
    build_pack_header,
    build_record_header,
)
from imager.durable import fsync_dir, write_atomic
from imager.repo.faults import crash_point
from imager.repo.store import Repository

log = logging.getLogger(__name__)


class PackWriter:
    """Appends chunk records to packs of about ``repo.pack_size`` bytes and publishes them."""

    def __init__(self, repo: Repository, level: int = 3) -> None:
        self.repo = repo
        self.level = level
        self._local = threading.local()
        self._fd: int | None = None
        self._pack_id = ""
        self._offset = 0
        self._entries: list[IndexEntry] = []
        self._pending: dict[bytes, IndexEntry] = {}
        self.bytes_written = 0  # pack + index bytes published by this writer

    def holds(self, digest: bytes) -> bool:
        """True when the chunk is already in the repository or in the pack being written."""
        return digest in self._pending or self.repo.has_chunk(digest)

    def add(self, digest: bytes, data: bytes | memoryview) -> int:
        """Compress and append one chunk; returns the record's size on disk."""
        flags, stored = self.encode(data)
        return self.add_stored(digest, len(data), stored, flags)

    def encode(self, data: bytes | memoryview) -> tuple[int, bytes]:
        """(flags, stored bytes) for a chunk: zstd unless that does not make it smaller.
        Thread-safe: one compressor per thread (zstandard releases the GIL while compressing)."""
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self.level)
        compressed = cctx.compress(data)
        if len(compressed) < len(data):
            return FLAG_ZSTD, compressed
        return 0, bytes(data)

    def add_stored(self, digest: bytes, raw_len: int, stored: bytes, flags: int) -> int:
        """Append an already-encoded record (prune copies records without recompressing)."""
        if self._fd is None:
            self._open()
        header = build_record_header(RecordHeader(digest, raw_len, len(stored), flags))
        entry = IndexEntry(digest, self._offset, raw_len, len(stored), flags)
        self._write(header + stored)
        self._entries.append(entry)
        self._pending[digest] = entry
        if self._offset >= self.repo.pack_size:
            self.flush()
        return entry.record_size

    def _open(self) -> None:
        self._pack_id = uuid.uuid4().hex
        tmp = self.repo.path / "tmp" / f"{self._pack_id}.pack.tmp"
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._offset = 0
        self._write(build_pack_header())

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._offset += len(data)

    def flush(self) -> str | None:
        """Publish the current pack and its index (durably); returns its id, None if empty."""
        if self._fd is None:
            return None
        fd, pack_id, self._fd = self._fd, self._pack_id, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.repo.pack_path(pack_id)
        final.parent.mkdir(exist_ok=True)
        os.rename(self.repo.path / "tmp" / f"{pack_id}.pack.tmp", final)
        fsync_dir(final.parent)
        fsync_dir(self.repo.path / "tmp")
        crash_point("pack-published")
        index = PackIndex(pack_id, self._offset, tuple(self._entries))
        data = build_index(index)
        write_atomic(self.repo.index_path(pack_id), data)
        crash_point("index-published")
        self.repo.add_pack_index(index)
        self.bytes_written += self._offset + len(data)
        log.debug("published pack %s: %d chunks, %d bytes", pack_id, len(self._entries), self._offset)
        self._entries, self._pending = [], {}
        return pack_id

    def abort(self) -> None:
        """Drop the unpublished pack (its chunks were never indexed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            (self.repo.path / "tmp" / f"{self._pack_id}.pack.tmp").unlink(missing_ok=True)
            self._entries, self._pending = [], {}
