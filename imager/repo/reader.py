"""SnapshotReader: one snapshot of a repository as an ImageReader (``REPO@ID``, ``REPO@latest``).

Everything that reads images (show, verify, extract, export, restore) reads a snapshot through
this class, so a snapshot behaves exactly like an image file. Every DATA chunk is checked
against its sha256 digest when read.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from formats.errors import ChecksumMismatch
from formats.extent import Extent, Kind
from imager.errors import OutOfBounds
from imager.image.base import Chunk
from imager.repo import snapshot as snapshots
from imager.repo.store import Repository


class SnapshotReader:
    """An ImageReader over snapshot ``ref`` of the repository at ``repo``."""

    def __init__(self, path: str, **_options: Any) -> None:
        repo_path, ref = snapshots.split_ref(path)
        self.path = path
        self.repo = Repository(repo_path)
        self.snapshot: dict[str, Any] = snapshots.resolve(self.repo, ref)
        self.id: str = self.snapshot["id"]
        self.sector_size: int = self.snapshot["sector_size"]
        self.sector_count: int = self.snapshot["sector_count"]
        self.chunk_sectors: int = self.snapshot["chunk_sectors"]
        self.manifest: Any = snapshots.load_manifest(self.snapshot, self.repo)
        self.partition_table: dict[str, Any] = snapshots.table_of(self.snapshot)
        self._chunks = list(self._build_chunks())
        self._starts = [c.extent.start_lba for c in self._chunks]
        self._cache: tuple[int, bytes] | None = None

    def _build_chunks(self) -> Iterator[Chunk]:
        index = 0
        for extent, digest in snapshots.range_extents(self.snapshot):
            if digest is not None:
                yield Chunk(index, extent, digest)
                index += 1
                continue
            # runs are cut at chunk boundaries so no chunk is ever larger than chunk_sectors
            lba = extent.start_lba
            while lba < extent.end_lba:
                end = min(extent.end_lba, (lba // self.chunk_sectors + 1) * self.chunk_sectors)
                yield Chunk(index, Extent(lba, end - lba, extent.kind, extent.fill))
                index += 1
                lba = end

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in LBA order, covering 0..sector_count exactly."""
        return iter(self._chunks)

    @property
    def hashes(self) -> dict[str, str]:
        """Whole-image hashes recorded at backup (algorithm -> hex)."""
        return dict(self.snapshot.get("hashes") or {})

    def extents(self) -> list[Extent]:
        """Sector-precise map (the manifest's, with UNREAD/NOT_ACQUIRED laid over chunk kinds)."""
        if self.manifest is not None:
            return self.manifest.extents()
        return [Extent(r["lba"], r["count"], Kind(r["kind"]), r.get("fill"))
                for r in self.snapshot["ranges"]]

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes; DATA verified by sha256, other kinds synthesised.

        Raises:
            ChecksumMismatch: the stored chunk does not match its digest (names pack and chunk).
        """
        ext = chunk.extent
        size = ext.count * self.sector_size
        if ext.kind is Kind.FILL:
            return bytes([ext.fill or 0]) * size
        if ext.kind is not Kind.DATA:
            return bytes(size)
        data = self.repo.read_chunk(bytes.fromhex(chunk.check or ""))
        if len(data) != size:
            raise ChecksumMismatch(f"snapshot {self.id} chunk {chunk.index}", lba=ext.start_lba,
                                   expected=f"{size} bytes", actual=f"{len(data)} bytes")
        return data

    def _chunk_bytes(self, pos: int) -> bytes:
        if self._cache is not None and self._cache[0] == pos:
            return self._cache[1]
        data = self.read_chunk(self._chunks[pos])
        self._cache = (pos, data)
        return data

    def read(self, lba: int, count: int) -> bytes:
        """Any sector range (random access)."""
        if lba < 0 or count < 0 or lba + count > self.sector_count:
            raise OutOfBounds(lba, count, self.sector_count)
        out = bytearray()
        pos = bisect.bisect_right(self._starts, lba) - 1
        end = lba + count
        while lba < end:
            chunk = self._chunks[pos]
            data = self._chunk_bytes(pos)
            lo = (lba - chunk.extent.start_lba) * self.sector_size
            take = min(end, chunk.extent.end_lba) - lba
            out += data[lo:lo + take * self.sector_size]
            lba += take
            pos += 1
        return bytes(out)

    def close(self) -> None:
        self.repo.close()
