"""Raw images: a sparse raw file (holes for zero chunks) with its manifest beside it.

``RawSink`` is ``imager acquire --format raw``: IMAGE is the device's bytes, IMAGE.json the
manifest. ``RawReader`` reads any plain raw file; when IMAGE.json is beside it, every chunk is
checked against the manifest's check values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from formats.errors import InvalidField
from formats.extent import Extent, Kind
from formats.manifest import Manifest
from imager.durable import fsync_parent
from imager.errors import BadInput
from imager.image.base import Chunk
from imager.image.chunked import ChunkedRead, check_chunk
from imager.image.sidecar import load_sidecar, save_sidecar

DEFAULT_CHUNK_BYTES = 4 << 20




def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class RawSink:
    """Writes a sparse raw file: DATA and FILL chunks are written, the rest stay holes."""

    image_format = "raw"

    def __init__(self, path: str, *, sector_size: int, sector_count: int, chunk_sectors: int,
                 _fd: int | None = None) -> None:
        self.path, self.sector_size = path, sector_size
        self.sector_count, self.chunk_sectors = sector_count, chunk_sectors
        if _fd is None:
            _fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            os.ftruncate(_fd, sector_count * sector_size)
            fsync_parent(path)
        self.fd = _fd
        self.chunks = 0

    @classmethod
    def reopen(cls, path: str, offset: int, **kw: Any) -> RawSink:
        """Continue after ``offset`` committed bytes; everything past it becomes a hole again."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        sink = cls(path, _fd=fd, **kw)
        size = sink.sector_count * sink.sector_size
        if (offset and os.fstat(fd).st_size != size) or offset > size:
            os.close(fd)
            raise BadInput(f"{path}: not the {size}-byte raw image the journal describes")
        os.ftruncate(fd, offset)   # uncommitted writes past the checkpoint must not survive
        os.ftruncate(fd, size)
        os.fsync(fd)
        chunk_bytes = sink.chunk_sectors * sink.sector_size
        sink.chunks = -(-offset // chunk_bytes)
        return sink

    def replay(self) -> Iterator[bytes]:
        """The bytes of every committed chunk, in order."""
        cs, ss = self.chunk_sectors, self.sector_size
        for index in range(self.chunks):
            count = min(cs, self.sector_count - index * cs)
            yield os.pread(self.fd, count * ss, index * cs * ss)

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store one chunk; ZERO/UNREAD/NOT_ACQUIRED stay holes (zeros)."""
        offset = extent.start_lba * self.sector_size
        if extent.kind is Kind.DATA:
            _write_all(self.fd, data or b"", offset)
        elif extent.kind is Kind.FILL:
            _write_all(self.fd, bytes([extent.fill or 0]) * (extent.count * self.sector_size),
                       offset)
        self.chunks = extent.start_lba // self.chunk_sectors + 1

    def checkpoint(self) -> dict[str, Any]:
        """fsync; the state a journal line records."""
        os.fsync(self.fd)
        end = min(self.chunks * self.chunk_sectors, self.sector_count) * self.sector_size
        return {"offset": end, "chunks": self.chunks}

    def finalize(self, manifest: Manifest) -> None:
        """fsync the image, then write IMAGE.json atomically (temp file, fsync, rename)."""
        os.fsync(self.fd)
        save_sidecar(self.path, manifest)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RawReader(ChunkedRead):
    """A raw file as an ImageReader; verified against IMAGE.json when it is there."""

    def __init__(self, path: str, *, sector_size: int | None = None, **_options: Any) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise BadInput(f"{path}: cannot open: {err.strerror}") from err
        try:
            self._setup(os.fstat(self.fd).st_size, sector_size)
        except BaseException:
            self.close()
            raise

    def _setup(self, size: int, sector_size: int | None) -> None:
        if size == 0:  # would "verify" as 0 chunks, 0 bad: an empty file is no image
            raise BadInput(f"{self.path}: truncated to 0 bytes (empty): not an image")
        self.manifest = load_sidecar(self.path)
        if self.manifest is not None:
            m = self.manifest
            if m.sector_count * m.sector_size != size:
                raise InvalidField("raw image", "size", size,
                                   f"IMAGE.json says {m.sector_count * m.sector_size}")
            self.sector_size, self.sector_count, self.chunk_sectors = \
                m.sector_size, m.sector_count, m.chunk_sectors
            self._chunks = [Chunk(i, e, c) for i, e, c in m.iter_chunks()]
            return
        self.sector_size = sector_size or 512
        if size % self.sector_size:
            raise BadInput(f"{self.path}: size {size} is not a multiple of the "
                           f"{self.sector_size}-byte sector")
        self.sector_count = size // self.sector_size
        self.chunk_sectors = DEFAULT_CHUNK_BYTES // self.sector_size
        self._chunks = [Chunk(i, Extent(s, min(self.chunk_sectors, self.sector_count - s)))
                        for i, s in enumerate(range(0, self.sector_count, self.chunk_sectors))]

    @property
    def hashes(self) -> dict[str, str]:
        """Whole-image hashes from IMAGE.json (empty without one)."""
        return dict(self.manifest.hashes) if self.manifest else {}

    def chunks(self) -> Iterator[Chunk]:
        return iter(self._chunks)

    def extents(self) -> list[Extent]:
        """Sector map from IMAGE.json, or one DATA extent."""
        if self.manifest is not None:
            return self.manifest.extents()
        return [Extent(0, self.sector_count)] if self.sector_count else []

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes, checked against IMAGE.json when present."""
        ext = chunk.extent
        data = os.pread(self.fd, ext.count * self.sector_size, ext.start_lba * self.sector_size)
        if len(data) != ext.count * self.sector_size:
            raise BadInput(f"{self.path}: short read at LBA {ext.start_lba} (file shrank?)")
        if self.manifest is not None:
            check_chunk(self.manifest.chunk_check, chunk, data)
        return data

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1


