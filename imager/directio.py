"""O_DIRECT output: appending a stream to a file without copying it into the page cache.

(Added for performance: `perf` of an acquisition showed the kernel's copy of the compressed
image into the page cache as ~9% of all CPU samples on a CPU-bound two-core machine, plus
the writeback left for the final fsync.) The stream is gathered in a page-aligned buffer and
written in whole aligned pieces through a second, O_DIRECT descriptor of the same open file.
The unaligned tail stays in the buffer; ``sync`` makes it durable through the page cache and
the next O_DIRECT write of that block replaces it (the kernel flushes and drops the cached
page first, so both views agree). Where O_DIRECT is refused (EINVAL: tmpfs, FUSE, an
unaligned file system) everything goes through the page cache as before.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os

log = logging.getLogger(__name__)
ALIGN = 4096            # file offset and length alignment used for O_DIRECT writes
PIECE = 8 << 20         # bytes gathered before one O_DIRECT write


def open_direct(fd: int, flags: int) -> int:
    """A second descriptor of the open file ``fd`` with O_DIRECT (``/proc/self/fd``).

    Raises:
        OSError: EINVAL where the file system takes no O_DIRECT.
    """
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_DIRECT | os.O_CLOEXEC)


class DirectAppender:
    """Appends to ``fd`` (opened for writing; readable when ``end`` is not aligned) from byte
    ``end`` on. ``end`` is the logical end of the stream, written or still buffered."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.base = end - end % ALIGN          # file offset of buf[0]
        self.used = end - self.base
        self.dfd: int | None = None
        self.buf: mmap.mmap | None = None
        try:
            self.dfd = open_direct(fd, os.O_WRONLY)
            self.buf = mmap.mmap(-1, PIECE)  # page-aligned, as O_DIRECT needs
            if self.used:  # resuming mid-block: the block's head comes from the file
                head = os.pread(fd, self.used, self.base)
                if len(head) != self.used:
                    raise OSError(errno.EIO, f"short read of {self.used} bytes at {self.base}")
                self.buf[:self.used] = head
        except OSError as err:
            if err.errno != errno.EINVAL:
                self.close()
                raise
            log.debug("O_DIRECT refused (%s); appending through the page cache", err.strerror)
            self.close()

    @property
    def end(self) -> int:
        return self.base + self.used

    def append(self, data: bytes | memoryview) -> None:
        """Add ``data`` to the stream (written once a whole piece is gathered)."""
        view = memoryview(data)
        while len(view):
            if self.buf is None:  # O_DIRECT was refused on the way
                self._write_through(view, self.end)
                self.used += len(view)
                return
            n = min(len(view), PIECE - self.used)
            self.buf[self.used:self.used + n] = view[:n]
            self.used += n
            view = view[n:]
            if self.used == PIECE:
                self._write_direct(PIECE)

    def patch(self, offset: int, data: bytes | memoryview) -> None:
        """Overwrite bytes already appended (a header filled in once its length is known):
        in the buffer where they still are, through the page cache where they are written."""
        view = memoryview(data)
        if offset < 0 or offset + len(view) > self.end:
            raise ValueError(f"patch of {len(view)} bytes at {offset} is past the end {self.end}")
        if self.buf is not None and offset + len(view) > self.base:
            cut = max(self.base - offset, 0)
            start = offset + cut - self.base
            self.buf[start:start + len(view) - cut] = view[cut:]
            view = view[:cut]
        if len(view):
            self._write_through(view, offset)

    def flush(self) -> None:
        """Hand everything appended to the kernel (aligned part O_DIRECT, tail via the cache):
        it survives the process, as written data does."""
        if self.buf is not None and self.used:
            aligned = self.used - self.used % ALIGN
            if aligned:
                self._write_direct(aligned)
            if self.used and self.buf is not None:
                with memoryview(self.buf) as view:
                    self._write_through(view[:self.used], self.base)

    def sync(self) -> None:
        """Everything appended is on the medium."""
        self.flush()
        os.fsync(self.fd)

    def _write_direct(self, length: int) -> None:
        """Write buf[:length] (aligned) at ``base``; keep what follows at the buffer's start.

        A file system that opened O_DIRECT but refuses the write (EINVAL) gets the buffer
        through the page cache, and everything after it too."""
        assert self.buf is not None and self.dfd is not None
        try:
            with memoryview(self.buf) as view:
                done = 0
                while done < length:
                    done += os.pwritev(self.dfd, [view[done:length]], self.base + done)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            refused = err.strerror
        else:
            rest = self.used - length
            if rest:
                self.buf.move(0, length, rest)
            self.base += length
            self.used -= length
            return
        # here, not in the except clause: its traceback still holds views of the buffer
        log.debug("O_DIRECT write refused (%s); appending through the page cache", refused)
        with memoryview(self.buf) as view:
            self._write_through(view[:self.used], self.base)
        self.close()  # buf None: append() and patch() write through from now on

    def _write_through(self, view: memoryview, offset: int) -> None:
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self) -> None:
        """Drop the O_DIRECT descriptor and buffer (``flush`` first to keep what is buffered)."""
        if self.dfd is not None:
            os.close(self.dfd)
            self.dfd = None
        if self.buf is not None:
            self.buf.close()
            self.buf = None
