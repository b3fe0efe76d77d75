"""The two contracts every image format implements.

``Sink``: what the acquire pipeline writes into; it never knows which format it feeds.
``ImageReader``: what verify, show, extract, export and restore read from; they never know which
format they read (native zstd image, raw, Android sparse, E01, snapshot).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from formats.extent import Extent


@dataclass(frozen=True)
class Chunk:
    """One fixed-size, LBA-aligned piece of an image (the last one may be shorter).

    ``check`` is the image's stored check value for the chunk's bytes, or ``None`` when the
    format stores none (a raw image); ``extent.kind`` says whether the chunk holds data.
    """

    index: int
    extent: Extent
    check: str | None = None


@runtime_checkable
class Sink(Protocol):
    """Receives the pipeline's output in LBA order."""

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store one chunk: ``data`` for DATA, ``None`` for ZERO/FILL/UNREAD/NOT_ACQUIRED."""

    def checkpoint(self) -> dict[str, Any]:
        """Make everything written so far durable; return state for the resume journal."""

    def finalize(self, manifest: Any) -> None:
        """Write the trailer (manifest, index) and close."""


@runtime_checkable
class ImageReader(Protocol):
    """Random and sequential access to an image's sectors and its check values."""

    sector_size: int
    sector_count: int
    chunk_sectors: int

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in LBA order, covering 0..sector_count exactly."""

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes after checking them (ZERO/FILL/UNREAD/NOT_ACQUIRED synthesised).

        Raises:
            formats.errors.ChecksumMismatch: the stored bytes do not match ``chunk.check``.
        """

    def read(self, lba: int, count: int) -> bytes:
        """Any sector range (random access)."""

    def close(self) -> None: ...
