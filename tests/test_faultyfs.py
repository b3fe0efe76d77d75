"""The faulty FUSE device: real EIO through the kernel, exactly at the configured sectors."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from tests.conftest import have_root

pytestmark = pytest.mark.skipif(not have_root() or not os.path.exists("/dev/fuse"),
                                reason="FUSE and loop devices need root and /dev/fuse")
SIZE = 1 << 20
BAD = [7, 8, 1000, 2047]


def _pread(fd: int, lba: int, count: int, direct: bool = False) -> bytes:
    if not direct:
        return os.pread(fd, count * 512, lba * 512)
    buf = mmap.mmap(-1, count * 512)  # O_DIRECT wants an aligned buffer
    n = os.preadv(fd, [buf], lba * 512)
    return bytes(buf[:n])


def _errno(fd: int, lba: int, count: int, direct: bool = False) -> int | None:
    try:
        _pread(fd, lba, count, direct)
    except OSError as err:
        return err.errno
    return None


def test_bad_sectors_fail_with_eio_on_the_fuse_file(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", bad=BAD) as dev:
        fd = os.open(dev.path, os.O_RDONLY)
        try:
            failing = [lba for lba in range(SIZE // 512) if _errno(fd, lba, 1) is not None]
            assert failing == BAD
            assert _errno(fd, 7, 1) == errno.EIO
            assert _errno(fd, 0, 16) == errno.EIO        # a larger read touching a bad sector
            assert _pread(fd, 9, 100) == data[9 * 512:109 * 512]
        finally:
            os.close(fd)


def test_loop_device_on_top_fails_exactly_those_sectors(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", bad=BAD, loop=True) as dev:
        assert dev.loop and dev.loop.startswith("/dev/loop")
        fd = os.open(dev.loop, os.O_RDONLY | os.O_DIRECT)
        try:
            failing = [lba for lba in range(SIZE // 512)
                       if _errno(fd, lba, 1, direct=True) is not None]
            assert failing == BAD
            assert _errno(fd, 1000, 1, direct=True) == errno.EIO
            assert _pread(fd, 1001, 64, direct=True) == data[1001 * 512:1065 * 512]
        finally:
            os.close(fd)
        loop = dev.loop
    listed = subprocess.run(["losetup", "-l", "-n", "-O", "NAME"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert loop not in listed  # detached on exit


def test_weak_sector_fails_k_times_then_reads(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", weak={40: 2}) as dev:
        fd = os.open(dev.path, os.O_RDONLY)
        try:
            results = [_errno(fd, 40, 1) for _ in range(3)]
            assert results == [errno.EIO, errno.EIO, None]
            assert _pread(fd, 40, 1) == data[40 * 512:41 * 512]
        finally:
            os.close(fd)
        assert dev.stats()["weak_left"] == {"40": 0}


def test_vanish_and_return(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", loop=True) as dev:
        fd = os.open(dev.path, os.O_RDONLY)
        lfd = os.open(dev.loop, os.O_RDONLY | os.O_DIRECT)
        try:
            dev.vanish()
            assert _errno(fd, 0, 1) == errno.ENXIO
            with pytest.raises(OSError) as info:
                os.open(dev.path, os.O_RDONLY)
            assert info.value.errno == errno.ENXIO
            assert _errno(lfd, 0, 1, direct=True) == errno.EIO  # the loop layer says EIO
            dev.restore()
            assert _pread(fd, 3, 2) == data[3 * 512:5 * 512]
            assert _pread(lfd, 3, 2, direct=True) == data[3 * 512:5 * 512]
            dev.storm()
            assert _errno(fd, 3, 1) == errno.EIO
        finally:
            os.close(fd)
            os.close(lfd)
        mnt = dev.mountpoint
    assert not os.path.ismount(mnt)
    assert dev.process.returncode is not None


def test_slow_sector_is_served_and_counted(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", slow={5: 0.05}) as dev:
        fd = os.open(dev.path, os.O_RDONLY)
        try:
            assert _pread(fd, 4, 2) == data[4 * 512:6 * 512]
        finally:
            os.close(fd)
        assert dev.stats()["sectors_read"] == {"5": 1}


def test_unmounts_when_the_body_raises(tmp_path: Path) -> None:
    make_image(tmp_path / "img", SIZE)
    with pytest.raises(RuntimeError), faulty_device(tmp_path / "img", loop=True) as dev:
        raise RuntimeError("test body failed")
    assert not os.path.ismount(dev.mountpoint)
