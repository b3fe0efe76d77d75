"""Helpers for the sparse tests: an in-memory ImageReader and the AOSP tools as oracles."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

from formats.extent import Extent, Kind
from imager.image.base import Chunk
from tests.conftest import need_tool


class MemoryReader:
    """An ImageReader over bytes with the chunk kinds a test chooses (runs of (count, kind, fill))."""

    def __init__(self, data: bytes, runs: list[tuple[int, Kind, int | None]],
                 sector_size: int = 512, chunk_sectors: int = 64) -> None:
        self.data, self.sector_size, self.chunk_sectors = data, sector_size, chunk_sectors
        self.sector_count = len(data) // sector_size
        assert sum(r[0] for r in runs) == self.sector_count
        self.runs = runs
        self.chunks_read = 0

    def chunks(self) -> Iterator[Chunk]:
        index, lba = 0, 0
        for count, kind, fill in self.runs:
            end = lba + count
            while lba < end:
                n = min(end - lba, self.chunk_sectors - lba % self.chunk_sectors)
                yield Chunk(index, Extent(lba, n, kind, fill))
                index, lba = index + 1, lba + n

    def read_chunk(self, chunk: Chunk) -> bytes:
        self.chunks_read += 1
        return self.read(chunk.extent.start_lba, chunk.extent.count)

    def read(self, lba: int, count: int) -> bytes:
        ss = self.sector_size
        return self.data[lba * ss:(lba + count) * ss]

    def close(self) -> None:
        pass


def expected_expansion(reader: MemoryReader, block_size: int = 4096) -> bytes:
    """What simg2img must produce for ``reader``: data where read, zeros elsewhere, padded.

    Built from the runs alone (not from our writer): UNREAD/NOT_ACQUIRED sectors are zero in a
    fresh output file whether they became DONT_CARE or zero-padded RAW.
    """
    out, lba = bytearray(), 0
    for count, kind, _fill in reader.runs:
        chunk = reader.read(lba, count)
        out += chunk if kind.was_read else bytes(len(chunk))
        lba += count
    out += bytes(-len(out) % block_size)
    return bytes(out)


def simg2img(pieces: list[str] | list[Path], out: Path) -> bytes:
    """Expand sparse file(s) with AOSP simg2img; the raw bytes."""
    need_tool("simg2img")
    subprocess.run(["simg2img", *map(str, pieces), str(out)], check=True, capture_output=True)
    return out.read_bytes()


def img2simg(raw: Path, out: Path, block_size: int | None = None) -> Path:
    """Convert a raw file with AOSP img2simg."""
    need_tool("img2simg")
    cmd = ["img2simg", str(raw), str(out)] + ([str(block_size)] if block_size else [])
    subprocess.run(cmd, check=True, capture_output=True)
    return out
