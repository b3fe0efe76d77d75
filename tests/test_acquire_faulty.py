"""imager acquire on a real failing block device (FUSE faulty device + loop device).

The truth is the fault plan handed to the device; the image must say exactly which sectors could
not be read, recover every other sector byte-exact, and decompress with stock zstd.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from imager.cli import main
from tests.conftest import have_root, need_tool

SIZE = 4 << 20
SS = 512


def _acquire(source: str, image: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    code = main(["acquire", source, str(image), "--quiet", "--json", "--chunk-size", "256K",
                 *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.skipif(not have_root(), reason="FUSE + loop devices need root")
def test_bad_sectors_on_a_loop_device_become_exactly_those_unread_ranges(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("zstd")
    data = make_image(tmp_path / "disk", SIZE)
    bad = [100, 101, 5000, 7001]
    with faulty_device(tmp_path / "disk", bad=bad, weak={3000: 1}, loop=True) as dev:
        summary = _acquire(dev.source, tmp_path / "img.imgz", capsys, "--retries", "2")
    assert summary["unread"] == [[100, 2], [5000, 1], [7001, 1]]
    raw = subprocess.run(["zstd", "-d", "-c", str(tmp_path / "img.imgz")], check=True,
                         capture_output=True).stdout
    expected = bytearray(data)
    for lba in bad:
        expected[lba * SS:(lba + 1) * SS] = bytes(SS)  # unread sectors decompress as zeros
    assert raw == bytes(expected)  # the weak sector 3000 was recovered by a retry


@pytest.mark.skipif(not have_root(), reason="FUSE needs root")
def test_a_bad_sector_in_the_table_area_does_not_stop_the_acquisition(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image(tmp_path / "disk", SIZE)
    with faulty_device(tmp_path / "disk", bad=[0]) as dev:
        summary = _acquire(dev.source, tmp_path / "img.imgz", capsys)
    assert summary["unread"] == [[0, 1]]
