"""salvage_read on the faulty FUSE device (and a loop device on top of it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from formats.extent import Extent, Kind
from imager.devices.file import DirectFileSource, FileSource
from imager.errors import DeviceGone, ReadError
from imager.salvage import SkipPolicy, salvage_read
from tests.conftest import have_root

pytestmark = pytest.mark.skipif(not have_root() or not os.path.exists("/dev/fuse"),
                                reason="FUSE and loop devices need root and /dev/fuse")
SIZE = 1 << 20


def _runs(lbas: list[int]) -> list[Extent]:
    """The truth as merged UNREAD extents, built independently of the code under test."""
    out: list[Extent] = []
    for lba in sorted(lbas):
        if out and out[-1].end_lba == lba:
            out[-1] = Extent(out[-1].start_lba, out[-1].count + 1, Kind.UNREAD)
        else:
            out.append(Extent(lba, 1, Kind.UNREAD))
    return out


@pytest.mark.parametrize("use_loop", [False, True])
def test_good_sectors_exact_and_unread_set_exact(tmp_path: Path, use_loop: bool) -> None:
    data = make_image(tmp_path / "img", SIZE)
    bad = [130, 131, 132, 200, 255, 256, 1023]
    with faulty_device(tmp_path / "img", bad=bad, loop=use_loop) as dev:
        src = DirectFileSource(dev.source)
        try:
            with pytest.raises(ReadError):
                src.read(128, 1024)
            got, unread = salvage_read(src, 128, 1024, retries=1)
        finally:
            src.close()
    assert unread == _runs([b for b in bad if 128 <= b < 1152])
    expect = bytearray(data[128 * 512:1152 * 512])
    for lba in bad:
        expect[(lba - 128) * 512:(lba - 127) * 512] = bytes(512)
    assert got == bytes(expect)


def test_weak_sectors_recovered_by_retries(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", weak={10: 3, 20: 1}, bad=[30]) as dev:
        src = FileSource(dev.path)
        try:
            got, unread = salvage_read(src, 0, 64, retries=3)
        finally:
            src.close()
    assert unread == [Extent(30, 1, Kind.UNREAD)]
    assert got[10 * 512:11 * 512] == data[10 * 512:11 * 512]
    assert got[20 * 512:21 * 512] == data[20 * 512:21 * 512]


def test_without_enough_retries_a_weak_sector_stays_unread(tmp_path: Path) -> None:
    make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", weak={10: 50}) as dev:  # outlasts split + 2 tries
        src = FileSource(dev.path)
        try:
            got, unread = salvage_read(src, 0, 16, retries=1)
        finally:
            src.close()
    assert unread == [Extent(10, 1, Kind.UNREAD)]
    assert got[10 * 512:11 * 512] == bytes(512)


def test_a_run_of_errors_skips_ahead_and_never_reports_skipped_as_data(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE)
    dead = list(range(100, 400))   # a dying area
    with faulty_device(tmp_path / "img", bad=dead) as dev:
        src = FileSource(dev.path)
        policy = SkipPolicy(error_run=4, skip_sectors=64)
        try:
            got, unread = salvage_read(src, 0, 512, retries=0, skip_policy=policy)
        finally:
            src.close()
        tried = dev.stats()["failed"]
    covered = {lba for e in unread for lba in range(e.start_lba, e.end_lba)}
    assert set(dead) <= covered                       # no bad sector reported as read
    assert policy.skipped                             # it did skip
    skipped = {lba for e in policy.skipped for lba in range(e.start_lba, e.end_lba)}
    assert skipped <= covered                         # skipped => UNREAD
    for lba in range(512):                            # everything else read byte-exact
        if lba not in covered:
            assert got[lba * 512:(lba + 1) * 512] == data[lba * 512:(lba + 1) * 512], lba
    assert tried < len(dead)                          # not hammered sector by sector


def test_vanished_device_raises_device_gone(tmp_path: Path) -> None:
    make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", bad=[5]) as dev:
        src = FileSource(dev.path)
        try:
            dev.vanish()
            with pytest.raises(DeviceGone):
                salvage_read(src, 0, 64)
        finally:
            src.close()


def test_eio_storm_on_a_loop_device_raises_device_gone(tmp_path: Path) -> None:
    make_image(tmp_path / "img", SIZE)
    with faulty_device(tmp_path / "img", loop=True) as dev:
        src = DirectFileSource(dev.loop)
        policy = SkipPolicy(error_run=4)
        try:
            _, unread = salvage_read(src, 0, 8, skip_policy=policy)  # all good: learns LBA 0
            assert unread == []
            dev.storm()
            with pytest.raises(DeviceGone, match="EIO storm"):
                salvage_read(src, 64, 64, skip_policy=policy)
        finally:
            src.close()
