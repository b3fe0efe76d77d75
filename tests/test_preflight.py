"""Pre-flight refusals: busy/mounted, system disk, too small, sector-size mismatch."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imager.devices.base import Identity
from imager.devices.file import FileTarget
from imager.errors import TargetRefused
from imager.preflight import check_not_busy, check_not_system, check_target, describe_target
from imager.restore_plan import TargetShape
from tests.conftest import loop_device, need_tool
from tests.restore_support import ChunkedFileReader, MiB, make_gpt_image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]]]:
    need_tool("sgdisk", "mkfs.ext4", "partx")
    path = tmp_path_factory.mktemp("preflight") / "src.img"
    return path, make_gpt_image(path)


def shape(path: str, size: int = 8 * MiB, sector_size: int = 512) -> TargetShape:
    """A target description that does not open the device (so O_EXCL does not answer first)."""
    return TargetShape(sector_size, size // sector_size,
                       Identity(kind="block", path=path, size_bytes=size, sector_size=sector_size))


@contextlib.contextmanager
def mounted_partition(image: Path, tmp_path: Path, number: int) -> Iterator[tuple[str, Path]]:
    """Attach ``image``, add its partitions (partx) and mount partition ``number`` read-only."""
    with loop_device(image) as dev:
        subprocess.run(["partx", "-a", dev], check=True, capture_output=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-o", "ro", f"{dev}p{number}", str(mnt)], check=True,
                       capture_output=True)
        try:
            yield dev, mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
            subprocess.run(["partx", "-d", dev], check=False, capture_output=True)


def test_mounted_partition_refuses_the_whole_disk(image, tmp_path: Path) -> None:
    src, _ = image
    disk = tmp_path / "disk.img"
    disk.write_bytes(src.read_bytes())
    with mounted_partition(disk, tmp_path, 2) as (dev, mnt):
        with pytest.raises(TargetRefused, match="busy"):
            FileTarget(dev)  # the kernel's O_EXCL answer
        with pytest.raises(TargetRefused, match=f"mounted on {mnt}"):
            check_not_busy(shape(dev))  # our own mountinfo check agrees
        with pytest.raises(TargetRefused, match="holds the running system"):
            check_not_system(shape(dev), system_paths=(str(mnt),))
        check_not_system(shape(dev))  # the real / is not on this loop device


def test_file_attached_to_a_loop_device_is_refused(image, tmp_path: Path) -> None:
    src, _ = image
    disk = tmp_path / "disk.img"
    disk.write_bytes(src.read_bytes())
    reader = ChunkedFileReader(src)
    target = FileTarget(str(disk))
    try:
        check_target(reader, target)  # free: fine
        with loop_device(disk) as dev, pytest.raises(TargetRefused, match=dev):
            check_target(reader, target)
    finally:
        target.close()
        reader.close()


def test_too_small_and_sector_size_mismatch_are_refused(image, tmp_path: Path) -> None:
    src, _ = image
    reader = ChunkedFileReader(src)
    small = tmp_path / "small.img"
    small.write_bytes(bytes(4 * MiB))
    target = FileTarget(str(small))
    try:
        with pytest.raises(TargetRefused, match=r"4194304 bytes, smaller than the image "
                                                r"\(8388608 bytes\)"):
            check_target(reader, target)
        check_target(reader, target, whole_device=False)  # partition restores fit per partition
    finally:
        target.close()
    four_k = tmp_path / "4k.img"
    four_k.write_bytes(bytes(8 * MiB))
    with loop_device(four_k, sector_size=4096) as dev:
        target = FileTarget(dev)
        try:
            with pytest.raises(TargetRefused, match="logical sector size 4096, the image has 512"):
                check_target(reader, target)
        finally:
            target.close()
    reader.close()


def test_describe_target_shows_size_and_current_table(image, tmp_path: Path) -> None:
    src, parts = image
    disk = tmp_path / "disk.img"
    disk.write_bytes(src.read_bytes())
    with loop_device(disk) as dev:
        target = FileTarget(dev)
        try:
            info = describe_target(target)
        finally:
            target.close()
    assert info["size_bytes"] == 8 * MiB and info["kind"] == "block" and info["path"] == dev
    assert info["table"]["kind"] == "gpt"
    got = {p["name"]: (p["first_lba"], p["last_lba"]) for p in info["table"]["partitions"]}
    assert got == parts  # as sgdisk -p lists them
