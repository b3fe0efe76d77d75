"""Regular image files and Linux block devices as Sources and Targets."""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import mmap
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

from imager.devices.base import GONE_ERRNOS, BaseSource, BaseTarget, Identity
from imager.directio import PIECE, open_direct
from imager.errors import (
    BadInput,
    DeviceError,
    DeviceGone,
    ImagerError,
    ReadError,
    TargetRefused,
)

log = logging.getLogger(__name__)

BLKROSET = 0x125D
BLKROGET = 0x125E
BLKSSZGET = 0x1268
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
BLKGETSIZE64 = 0x80081272


def _ioctl_u64(fd: int, request: int) -> int:
    return struct.unpack("Q", fcntl.ioctl(fd, request, b"\0" * 8))[0]


def _ioctl_int(fd: int, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, request, b"\0" * 4))[0]


def _sysfs_attr(dev_name: str, *names: str) -> str:
    """First non-empty sysfs attribute of the block device (or its parent disk)."""
    base = Path("/sys/class/block") / dev_name
    for name in names:
        for candidate in (base / name, base / "device" / name, base.parent / name):
            try:
                text = candidate.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return text
    return ""


def _block_identity(fd: int, path: str, sector_size: int, size: int) -> Identity:
    st = os.fstat(fd)
    name = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}").resolve().name
    extra = {"device": f"/dev/{name}"}
    backing = _sysfs_attr(name, "loop/backing_file")
    if backing:
        extra["loop_backing_file"] = backing
    return Identity(kind="block", path=path, size_bytes=size, sector_size=sector_size,
                    model=_sysfs_attr(name, "model", "name"),
                    serial=_sysfs_attr(name, "serial", "wwid", "cid"), extra=extra)


class _FdDevice:
    """Shared open/describe logic for files and block devices."""

    def _open(self, path: str, flags: int, sector_size: int | None) -> tuple[int, int, Identity]:
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as err:
            raise self._open_error(path, err) from err
        try:
            st = os.fstat(fd)
            if stat.S_ISBLK(st.st_mode):
                size = _ioctl_u64(fd, BLKGETSIZE64)
                logical = _ioctl_int(fd, BLKSSZGET)
                if sector_size and sector_size != logical:
                    raise BadInput(f"{path}: --sector-size {sector_size} but the device "
                                   f"reports {logical}")
                return fd, logical, _block_identity(fd, path, logical, size)
            if not stat.S_ISREG(st.st_mode):
                raise BadInput(f"{path}: not a regular file or block device")
            ss = sector_size or 512
            if st.st_size % ss:
                raise BadInput(f"{path}: size {st.st_size} is not a multiple of the "
                               f"{ss}-byte sector size")
            return fd, ss, Identity(kind="file", path=path, size_bytes=st.st_size,
                                    sector_size=ss)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _open_error(path: str, err: OSError) -> ImagerError:
        if err.errno == errno.EBUSY:  # O_EXCL on a mounted or in-use block device
            return TargetRefused(f"{path}: device is busy (mounted or opened by another program)")
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):  # the user named it wrong
            return BadInput(f"{path}: cannot open: {err.strerror}")
        return DeviceError(f"{path}: cannot open: {err.strerror}")


class FileSource(BaseSource, _FdDevice):
    """A regular image file or a block device, opened read-only (never written)."""

    def __init__(self, path: str, sector_size: int | None = None) -> None:
        self.fd, ss, identity = self._open(path, os.O_RDONLY, sector_size)
        super().__init__(ss, identity.size_bytes // ss, identity)
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:  # some devices do not take advice; it is only a hint
            pass

    def _read(self, lba: int, count: int) -> bytes:
        return os.pread(self.fd, count * self.sector_size, lba * self.sector_size)

    @property
    def reread_is_cheap(self) -> bool:
        """A regular file is read through the page cache: reading a chunk again soon costs a
        memory copy, not device I/O (the acquire pipeline relies on it; block devices: no)."""
        return self.identity.kind == "file"

    def known_zero(self, lba: int, count: int) -> bool:
        """True when the whole range is a hole of a regular file: it reads as zeros, so the
        pipeline need not read it (a file system without hole reporting says "data"
        everywhere, and block devices are never asked)."""
        if self.identity.kind != "file":
            return False
        self._check(lba, count)
        return _is_hole(self.fd, lba * self.sector_size, count * self.sector_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileTarget(BaseTarget, _FdDevice):
    """A writable image file or block device.

    Block devices are opened with O_EXCL, which the kernel refuses while the device (or any of
    its partitions) is mounted or held. ``create_size`` makes a missing regular file.
    """

    def __init__(self, path: str, sector_size: int | None = None,
                 create_size: int | None = None) -> None:
        flags = os.O_RDWR
        if create_size is not None and not os.path.exists(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            os.ftruncate(fd, create_size)
            os.close(fd)
        if os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode):
            flags |= os.O_EXCL
        self.fd, ss, identity = self._open(path, flags, sector_size)
        super().__init__(ss, identity.size_bytes // ss, identity)
        self.is_block = identity.kind == "block"
        self._direct_refused = False  # O_DIRECT (read-back, direct_writes) met EINVAL
        self.direct_writes = False   # restore turns it on: no page-cache copy of what it writes
        self._direct_fd: int | None = None
        self._direct_lock = threading.Lock()
        self._direct_local = threading.local()

    def _read(self, lba: int, count: int) -> bytes:
        return os.pread(self.fd, count * self.sector_size, lba * self.sector_size)

    def _write(self, lba: int, data: memoryview) -> None:
        offset = lba * self.sector_size
        if self.direct_writes and not self._direct_refused:
            try:
                self._write_direct(offset, data)
                return
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._refuse_direct(err)  # the same bytes go through the page cache below
        while len(data):
            n = os.pwrite(self.fd, data, offset)
            data, offset = data[n:], offset + n

    def _write_direct(self, offset: int, data: memoryview) -> None:
        fd, buf = self._direct_io()
        with memoryview(buf) as view:
            while len(data):
                piece = min(len(data), PIECE)
                view[:piece] = data[:piece]
                done = 0
                while done < piece:
                    done += os.pwritev(fd, [view[done:piece]], offset + done)
                data, offset = data[piece:], offset + piece

    def _direct_io(self) -> tuple[int, mmap.mmap]:
        """A second descriptor of the same open file with O_DIRECT, and this thread's aligned
        buffer (the restore writer and its read-back thread use the target at once)."""
        with self._direct_lock:
            if self._direct_fd is None:
                self._direct_fd = open_direct(self.fd, os.O_RDWR)
        buf = getattr(self._direct_local, "buf", None)
        if buf is None:
            buf = self._direct_local.buf = mmap.mmap(-1, PIECE)  # page-aligned
        return self._direct_fd, buf

    def flush(self) -> None:
        os.fsync(self.fd)

    def discard(self, lba: int, count: int) -> bool:
        """Punch a hole (files) or BLKDISCARD (devices); True when zeros are guaranteed."""
        off, length = lba * self.sector_size, count * self.sector_size
        if not self.is_block:
            _punch_hole(self.fd, off, length)
            return True
        fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("QQ", off, length))
        return False  # discard alone does not promise zeros; zero_out does

    def drop_cache(self, lba: int, count: int) -> None:
        """Forget cached pages of a flushed range so the next read comes from the medium.

        (Added for restore's read-back verification; only advice, errors are ignored.)
        """
        try:
            os.posix_fadvise(self.fd, lba * self.sector_size, count * self.sector_size,
                             os.POSIX_FADV_DONTNEED)
        except OSError as err:
            log.debug("%s: fadvise DONTNEED failed: %s", self.identity.path, err)

    def is_hole(self, lba: int, count: int) -> bool:
        """True when a file's range holds no data extent, so it reads as zeros (SEEK_DATA).

        (Added for restore's read-back of punched ranges: the file system's map says what a
        read would return without reading gigabytes of zeros.) Block devices: always False.
        """
        if self.is_block:
            return False
        return _is_hole(self.fd, lba * self.sector_size, count * self.sector_size)

    def read_from_medium(self, lba: int, count: int) -> bytes:
        """The range as the medium holds it, not as the page cache does (restore's read-back).

        O_DIRECT through a second descriptor of the same open file (``/proc/self/fd``): no
        cached page can answer, and large reads run at the device's speed. Where O_DIRECT is
        refused (tmpfs, an unaligned geometry) the cached pages are dropped and read instead.

        Raises:
            ReadError: the medium failed to deliver.
        """
        self._check(lba, count)
        if not self._direct_refused:
            try:
                return self._read_direct(lba * self.sector_size, count * self.sector_size)
            except OSError as err:
                if err.errno in GONE_ERRNOS:
                    raise DeviceGone(f"{self.identity.path}: device gone ({err.strerror})"
                                     ) from err
                if err.errno != errno.EINVAL:
                    raise ReadError(lba, count, err.strerror or str(err), err.errno) from err
                self._refuse_direct(err)
        self.drop_cache(lba, count)
        return self.read(lba, count)

    def _read_direct(self, offset: int, size: int) -> bytes:
        fd, buf = self._direct_io()
        parts, end = [], offset + size
        with memoryview(buf) as view:
            while offset < end:
                n = os.preadv(fd, [view[:min(PIECE, end - offset)]], offset)
                if n <= 0:
                    raise OSError(errno.EIO, f"read stopped at byte {offset}")
                parts.append(bytes(view[:n]))
                offset += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _refuse_direct(self, err: OSError) -> None:
        """EINVAL: the file system or this geometry takes no O_DIRECT (tmpfs, a 512-byte
        offset on a 4096-byte device): use the page cache from now on."""
        log.debug("%s: O_DIRECT refused (%s); using the page cache", self.identity.path,
                  err.strerror)
        self._direct_refused = True  # its descriptor stays open until close(): another
        # thread may be in the middle of a read or write on it

    def _close_direct(self) -> None:
        with self._direct_lock:
            if self._direct_fd is not None:
                os.close(self._direct_fd)
                self._direct_fd = None
        self._direct_local = threading.local()  # other threads' buffers go with their refs

    def zero_out(self, lba: int, count: int) -> None:
        off, length = lba * self.sector_size, count * self.sector_size
        if self.is_block:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", off, length))
        else:
            _punch_hole(self.fd, off, length)

    def close(self) -> None:
        self._close_direct()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1




def _is_hole(fd: int, offset: int, length: int) -> bool:
    """True when a regular file has no data extent in the range (``lseek(SEEK_DATA)``)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as err:
        return err.errno == errno.ENXIO  # no data from ``offset`` to the end of the file


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """libc with fallocate's signature, loaded once (find_library runs ldconfig: ~10 ms)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    return libc


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a file range so it reads as zeros (falls back to writing zeros)."""
    libc = _libc()
    if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    zeros = bytes(min(length, 1 << 20))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: end - offset], offset)


def get_readonly_flag(fd: int) -> bool:
    """The kernel read-only flag of a block device (BLKROGET)."""
    return bool(_ioctl_int(fd, BLKROGET))


def set_readonly_flag(fd: int, readonly: bool) -> None:
    """Set the kernel read-only flag of a block device (BLKROSET); needs CAP_SYS_ADMIN."""
    fcntl.ioctl(fd, BLKROSET, struct.pack("i", int(readonly)))


class DirectFileSource(FileSource):
    """A FileSource that reads block devices with O_DIRECT (added for rescue and salvage).

    Buffered block-device reads go through the page cache in 4 KiB pages with readahead: one bad
    512-byte sector fails its whole page and readahead hammers the area around it. O_DIRECT
    reads exactly the sectors asked for. Regular files are read as by FileSource.
    """

    def __init__(self, path: str, sector_size: int | None = None) -> None:
        super().__init__(path, sector_size)
        self._buf: mmap.mmap | None = None
        if self.identity.kind == "block":
            os.close(self.fd)
            try:
                self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as err:
                self.fd = -1
                raise self._open_error(path, err) from err

    def _read(self, lba: int, count: int) -> bytes:
        if self.identity.kind != "block":
            return super()._read(lba, count)
        size = count * self.sector_size
        if self._buf is None or len(self._buf) < size:
            self._buf = mmap.mmap(-1, max(size, 1 << 20))  # page-aligned, as O_DIRECT needs
        view = memoryview(self._buf)[:size]
        try:
            n = os.preadv(self.fd, [view], lba * self.sector_size)
            return bytes(view[:n])
        finally:
            view.release()

    def close(self) -> None:
        super().close()
        if self._buf is not None:
            self._buf.close()
            self._buf = None
