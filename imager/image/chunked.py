"""Shared by readers whose chunks carry manifest check values (native, raw + IMAGE.json)."""

from __future__ import annotations

from typing import Any

from formats.errors import ChecksumMismatch
from formats.extent import Kind
from imager.errors import BadInput
from imager.hashing import chunk_digest
from imager.image.base import Chunk


def check_chunk(algo: str, chunk: Chunk, data: bytes) -> None:
    """Compare a chunk's bytes with its manifest entry.

    Raises:
        ChecksumMismatch: a DATA chunk's digest differs, or a ZERO/FILL/UNREAD/NOT_ACQUIRED
            chunk holds other bytes than its constant.
    """
    ext = chunk.extent
    if ext.kind is Kind.DATA:
        actual = chunk_digest(algo, data)
        if chunk.check is not None and actual != chunk.check:
            raise ChecksumMismatch(f"chunk {algo}", lba=ext.start_lba, chunk=chunk.index,
                                   expected=chunk.check, actual=actual)
    elif data != bytes([ext.fill or 0]) * len(data):
        raise ChecksumMismatch(f"{ext.kind.value} chunk", lba=ext.start_lba, chunk=chunk.index,
                               expected=f"{len(data)} x {ext.fill or 0:#04x}",
                               actual="other bytes")


class ChunkedRead:
    """``read(lba, count)`` through verified ``read_chunk`` calls, caching the last chunk."""

    path: str
    sector_size: int
    sector_count: int
    chunk_sectors: int
    _chunks: list[Chunk]
    _cache: tuple[int, bytes] | None = None

    def read_chunk(self, chunk: Chunk) -> bytes:
        raise NotImplementedError

    def read(self, lba: int, count: int) -> bytes:
        """Sectors ``[lba, lba+count)``, reading (and verifying) only the chunks they touch."""
        if lba < 0 or count < 0 or lba + count > self.sector_count:
            raise BadInput(f"{self.path}: LBA range {lba}+{count} outside 0..{self.sector_count}")
        parts, ss, cs = [], self.sector_size, self.chunk_sectors
        pos, end = lba, lba + count
        while pos < end:
            index = pos // cs
            cached = self._cache
            if cached is None or cached[0] != index:
                cached = (index, self.read_chunk(self._chunks[index]))
                self._cache = cached
            take = min(end, (index + 1) * cs) - pos
            off = (pos - index * cs) * ss
            parts.append(cached[1][off:off + take * ss])
            pos += take
        return b"".join(parts)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
