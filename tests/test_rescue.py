"""imager rescue on the faulty FUSE device, checked against the truth and against GNU ddrescue.

The truth is the fault plan given to the device; bad-sector lists are read back with GNU
ddrescuelog (a third-party reader of the mapfile), never with our own parser.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from tests.conftest import REPO, have_root, need_tool
from tests.rescue_support import assert_rescued, ddrescue, imager, listed

pytestmark = pytest.mark.skipif(not have_root() or not os.path.exists("/dev/fuse"),
                                reason="FUSE and loop devices need root and /dev/fuse")
SIZE = 2 << 20
SECTORS = SIZE // 512
BAD = [3, 130, 131, 132, *range(1000, 1011), 2500, 3000, 3001, SECTORS - 1]


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    data = make_image(tmp_path / "disk.img", SIZE)
    return tmp_path / "disk.img", data


@pytest.mark.parametrize("use_loop", [False, True])
def test_rescue_recovers_all_good_sectors_and_the_exact_bad_set(
        tmp_path: Path, image: tuple[Path, bytes], use_loop: bool) -> None:
    img, data = image
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(img, bad=BAD, loop=use_loop) as dev:
        done = imager(dev.source, out, "--mapfile", mapfile)
    assert_rescued(data, out, mapfile, BAD)
    assert "bad 9728 B" in done.stdout  # 19 sectors
    # sparse: the zero quarter of the image was never written
    assert os.stat(out).st_blocks * 512 <= SIZE - SIZE // 4 + 64 * 1024
    assert (tmp_path / "map.bak").exists()


def test_reverse_gives_the_same_result(tmp_path: Path, image: tuple[Path, bytes]) -> None:
    img, data = image
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(img, bad=BAD, loop=True) as dev:
        imager(dev.source, out, "--mapfile", mapfile, "--reverse", "--block-size", "32KiB")
    assert_rescued(data, out, mapfile, BAD)


def test_weak_sectors_are_recovered_by_retry_passes(tmp_path: Path,
                                                    image: tuple[Path, bytes]) -> None:
    img, data = image
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    # each weak sector fails the cluster read and the trimming read; 50 then reads in the
    # first retry pass, 700 (4 failures) in the fourth read after the first run's three
    with faulty_device(img, bad=[2500], weak={50: 2, 700: 4}, loop=True) as dev:
        imager(dev.source, out, "--mapfile", mapfile, "--retries", "1")
        assert listed(mapfile, "-") == [700, 2500]
        imager(dev.source, out, "--mapfile", mapfile, "--retries", "2")
    assert_rescued(data, out, mapfile, [2500])


def test_imager_recovers_at_least_what_ddrescue_does(tmp_path: Path,
                                                     image: tuple[Path, bytes]) -> None:
    img, data = image
    with faulty_device(img, bad=BAD, loop=True) as dev:
        ddrescue(dev.source, tmp_path / "dd.raw", tmp_path / "dd.map")
        imager(dev.source, tmp_path / "im.raw", "--mapfile", tmp_path / "im.map")
    rescued_dd = len(listed(tmp_path / "dd.map", "+"))
    rescued_im = len(listed(tmp_path / "im.map", "+"))
    assert rescued_im >= rescued_dd
    assert listed(tmp_path / "im.map", "-") == listed(tmp_path / "dd.map", "-") == BAD
    totals = subprocess.run(["ddrescuelog", "-t", str(tmp_path / "im.map")], check=True,
                            capture_output=True, text=True).stdout
    assert "bad-sector:     9728 B,  in      6 area(s)" in totals
    assert_rescued(data, tmp_path / "im.raw", tmp_path / "im.map", BAD)


def test_imager_continues_a_ddrescue_run(tmp_path: Path, image: tuple[Path, bytes]) -> None:
    img, data = image
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(img, bad=BAD, loop=True) as dev:
        ddrescue("-n", "-N", "-s", "1MiB", dev.source, out, mapfile)  # copy only, half domain
        assert listed(mapfile, "*") != []
        imager(dev.source, out, "--mapfile", mapfile)
    assert_rescued(data, out, mapfile, BAD)


def test_ddrescue_continues_an_imager_run(tmp_path: Path, image: tuple[Path, bytes]) -> None:
    img, data = image
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(img, bad=BAD, loop=True) as dev:
        imager(dev.source, out, "--mapfile", mapfile, "--no-trim", "--no-scrape")
        assert listed(mapfile, "*") != [] and listed(mapfile, "-") == []
        ddrescue(dev.source, out, mapfile)
    assert_rescued(data, out, mapfile, BAD)


@pytest.mark.parametrize(("text", "message"), [
    ("0 ?\n0 0x100000 +\n0x80000 0x180000 ?\n", "mapfile line 3: block at 524288 overlaps"),
    ("0 ?\n0 0x100000 +\n0x100200 0x100000 ?\n", "mapfile line 3: block at 1049088 leaves a gap"),
    ("0 ?\n0 0x200000 !\n", "mapfile line 2: bad block status '!'"),
    ("0 ?\n0 0xFFFFFFFFFFFFFFFFFF +\n", "larger than 9223372036854775807"),
    ("0 ?\n0 0x400000 +\n", "covers bytes 0..4194304, but the source has 2097152"),
    ("0 ?\n0 0x100 +\n0x100 0x1FFF00 ?\n", "not aligned to the 512-byte sector size"),
])
def test_hostile_mapfiles_give_one_line_errors(tmp_path: Path, image: tuple[Path, bytes],
                                               text: str, message: str) -> None:
    img, _ = image
    mapfile = tmp_path / "map"
    mapfile.write_text(text)
    done = imager(img, tmp_path / "out.raw", "--mapfile", mapfile, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_usage_errors(tmp_path: Path, image: tuple[Path, bytes]) -> None:
    img, _ = image
    done = imager(img, tmp_path / "o", "--mapfile", tmp_path / "m", "--block-size", "1000",
                  check=False)
    assert done.returncode == 2 and "not a positive multiple" in done.stderr
    done = imager(img, img, "--mapfile", tmp_path / "m", check=False)
    assert done.returncode == 2 and "is the SOURCE" in done.stderr
    done = imager(img, tmp_path / "x.imgr", "--mapfile", tmp_path / "missing", "--finish",
                  check=False)
    assert done.returncode == 2 and "no such mapfile" in done.stderr
    (tmp_path / "m").write_text("0 +\n0 0x200000 +\n")
    done = imager(img, img, "--mapfile", tmp_path / "m", "--finish", check=False)
    assert done.returncode == 2 and "already exists" in done.stderr


def _truth_ranges(bad: list[int]) -> tuple[tuple[int, int], ...]:
    runs: list[list[int]] = []
    for lba in sorted(bad):
        if runs and runs[-1][0] + runs[-1][1] == lba:
            runs[-1][1] += 1
        else:
            runs.append([lba, 1])
    return tuple((s, c) for s, c in runs)


def test_finish_turns_raw_and_mapfile_into_a_native_image_with_unread(
        tmp_path: Path, image: tuple[Path, bytes]) -> None:
    need_tool("zstd")
    img, data = image
    out, mapfile, native = tmp_path / "out.raw", tmp_path / "map", tmp_path / "disk.imgr"
    with faulty_device(img, bad=BAD, loop=True) as dev:
        imager(dev.source, out, "--mapfile", mapfile)
    assert_rescued(data, out, mapfile, BAD)
    done = imager(out, native, "--mapfile", mapfile, "--finish")
    assert "9728 B unread in 6 range(s)" in done.stdout
    from imager.image.native import NativeReader

    reader = NativeReader(str(native))
    try:
        assert reader.manifest.unread == _truth_ranges(BAD)
        unread = {lba for e in reader.extents() if e.kind.value == "unread"
                  for lba in range(e.start_lba, e.end_lba)}
        assert unread == set(BAD)
    finally:
        reader.close()
    # stock zstd gives back the rescued raw bytes (unread sectors as zeros)
    plain = subprocess.run(["zstd", "-dc", str(native)], check=True, capture_output=True).stdout
    assert plain == out.read_bytes()


def test_finish_of_a_partial_rescue_marks_everything_not_rescued_unread(
        tmp_path: Path, image: tuple[Path, bytes]) -> None:
    img, _ = image
    out, mapfile, native = tmp_path / "out.raw", tmp_path / "map", tmp_path / "disk.imgr"
    with faulty_device(img, bad=BAD, loop=True) as dev:
        ddrescue("-n", "-N", "-s", "1MiB", dev.source, out, mapfile)
    not_rescued = listed(mapfile, "?*/-")
    assert len(not_rescued) > SECTORS // 2
    imager(out, native, "--mapfile", mapfile, "--finish")
    from imager.image.native import NativeReader

    reader = NativeReader(str(native))
    try:
        assert reader.manifest.unread == _truth_ranges(not_rescued)
    finally:
        reader.close()


def test_progress_reports_phases_bytes_and_error_rate(tmp_path: Path,
                                                      image: tuple[Path, bytes]) -> None:
    from formats.mapfile import Status
    from imager.devices.file import DirectFileSource
    from imager.rescue import RescueOptions, RescueProgress, rescue

    img, _ = image
    seen: list[RescueProgress] = []
    with faulty_device(img, bad=BAD, loop=True) as dev:
        src = DirectFileSource(dev.source)
        try:
            totals = rescue(src, tmp_path / "out.raw", tmp_path / "map",
                            RescueOptions(retries=1), progress=seen.append)
        finally:
            src.close()
    assert list(dict.fromkeys(s.phase for s in seen)) == ["?", "*", "/", "-", "+"]
    last = seen[-1]
    assert last.rescued_bytes == SIZE - 512 * len(BAD) == totals[Status.FINISHED]
    assert last.bad_bytes == 512 * len(BAD) and last.non_tried_bytes == 0
    assert 0 < last.error_rate < 1 and last.errors <= last.reads
    assert [s.rescued_bytes for s in seen] == sorted(s.rescued_bytes for s in seen)


def test_progress_bar_run_and_4096_byte_sectors(tmp_path: Path,
                                                image: tuple[Path, bytes]) -> None:
    img, data = image
    bad4k = [1, 200, 201, 511]          # 4096-byte sectors
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(img, bad=bad4k, sector_size=4096, loop=True) as dev:
        done = subprocess.run([sys.executable, "-m", "imager", "rescue", dev.source, str(out),
                               "--mapfile", str(mapfile)], cwd=REPO, capture_output=True,
                              text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stderr and "bad 16384 B" in done.stderr  # the bar's last state
    as512 = [lba * 8 + i for lba in bad4k for i in range(8)]
    assert_rescued(data, out, mapfile, as512)
    need_tool("ddrescuelog")
    bad = subprocess.run(["ddrescuelog", "-b4096", "-l-", str(mapfile)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert [int(x) for x in bad] == bad4k
