"""A stream (stdin, e.g. ``adb exec-out dd if=/dev/block/sda``) as a forward-only Source."""

from __future__ import annotations

import sys
from typing import BinaryIO

from imager.devices.base import BaseSource, Identity
from imager.errors import ReadError, UsageError


class StdinSource(BaseSource):
    """Sectors from a pipe. Reads must go forward; the size must be given (``--size``).

    Not resumable: a pipe cannot be rewound, so an interrupted acquisition starts over.
    """

    resumable = False

    def __init__(self, sector_size: int = 512, size: int | None = None,
                 stream: BinaryIO | None = None) -> None:
        if not size:
            raise UsageError("reading from stdin needs --size BYTES")
        if size % sector_size:
            raise UsageError(f"--size {size} is not a multiple of the {sector_size}-byte sector")
        super().__init__(sector_size, size // sector_size,
                         Identity(kind="stdin", path="-", size_bytes=size, sector_size=sector_size))
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.position = 0
        self.ended_at: int | None = None  # bytes the stream delivered, once it ended early

    def _read(self, lba: int, count: int) -> bytes:
        if lba < self.position:
            raise UsageError(f"stdin cannot go back to LBA {lba} (already at {self.position})")
        while self.position < lba:  # skip forward
            step = min(lba - self.position, 2048)
            try:
                self._exact(step)
            except ReadError as err:
                err.partial = b""  # what arrived belongs to the skipped range, not this read
                raise
            self.position += step
        data = self._exact(count)
        self.position += count
        return data

    def _exact(self, count: int) -> bytes:
        want = count * self.sector_size
        parts, got = [], 0
        while got < want and self.ended_at is None:
            piece = self.stream.read(want - got)
            if not piece:
                self.ended_at = self.position * self.sector_size + got
                break
            parts.append(piece)
            got += len(piece)
        if got < want:
            err = ReadError(self.position, count,
                            f"stream ended after {self.ended_at} bytes")
            # whole sectors that did arrive: the caller keeps them instead of losing the chunk
            err.partial = b"".join(parts)[: got - got % self.sector_size]
            raise err
        return b"".join(parts)
