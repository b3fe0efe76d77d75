"""Safety checks before a restore writes anything, and a description of what it overwrites.

Refused: a target that is mounted or held (a partition mounted, a device-mapper/RAID holder, a
loop device backed by the target file), the disk the running system lives on, a target smaller
than the image, or one with another logical sector size. FileTarget's O_EXCL open already
refuses most busy block devices; these checks also catch what O_EXCL does not (a file target
that backs a mounted loop device, a partition held while the whole disk is free).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from imager.errors import TargetRefused

log = logging.getLogger(__name__)

SYSTEM_PATHS = ("/", "/boot", "/boot/efi", "/usr")
MOUNTINFO = "/proc/self/mountinfo"


def check_target(reader: Any, target: Any, *, whole_device: bool = True,
                 system_paths: tuple[str, ...] = SYSTEM_PATHS) -> None:
    """Refuse ``target`` if restoring ``reader`` onto it is unsafe or cannot fit.

    Raises:
        TargetRefused: naming the reason and both values.
    """
    if target.sector_size != reader.sector_size:
        raise TargetRefused(f"{target.identity.path}: logical sector size "
                            f"{target.sector_size}, the image has {reader.sector_size}")
    if whole_device and target.sector_count < reader.sector_count:
        raise TargetRefused(
            f"{target.identity.path}: target is {target.sector_count * target.sector_size} bytes,"
            f" smaller than the image ({reader.sector_count * reader.sector_size} bytes)")
    check_not_busy(target)
    check_not_system(target, system_paths)


def check_not_the_image(image_path: str, target: Any) -> None:
    """Refuse restoring an image onto itself (the same file, by inode)."""
    try:
        same = os.path.samefile(image_path, target.identity.path)
    except OSError:
        return
    if same:
        raise TargetRefused(f"{target.identity.path}: is the image itself")


def _devnum(target: Any) -> int | None:
    """The st_rdev of a block-device target, None for anything else."""
    path = target.identity.path
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def _sysdir(devnum: int) -> Path:
    return Path(f"/sys/dev/block/{os.major(devnum)}:{os.minor(devnum)}").resolve()


def _disk_and_parts(devnum: int) -> set[str]:
    """major:minor of the device, its parent disk (if a partition) and all its partitions."""
    node = _sysdir(devnum)
    disk = node.parent if (node / "partition").exists() else node
    found = {_read(disk / "dev")}
    for child in disk.iterdir():
        if (child / "partition").exists():
            found.add(_read(child / "dev"))
    found.add(_read(node / "dev"))
    return {d for d in found if d}


def check_not_busy(target: Any) -> None:
    """Refuse a target whose disk or partitions are mounted or held, or that backs a loop."""
    devnum = _devnum(target)
    if devnum is None:
        _check_file_not_loop_backing(target.identity.path)
        return
    nums = _disk_and_parts(devnum)
    for line in _mountinfo():
        fields = line.split()
        if len(fields) > 4 and fields[2] in nums:
            raise TargetRefused(f"{target.identity.path}: device {fields[2]} is mounted on "
                                f"{_unescape(fields[4])}")
    for num in nums:
        holders = _sysdir(_parse_devnum(num)) / "holders"
        held = sorted(p.name for p in holders.iterdir()) if holders.is_dir() else []
        if held:
            raise TargetRefused(f"{target.identity.path}: device {num} is held by "
                                f"{', '.join(held)}")


def _check_file_not_loop_backing(path: str) -> None:
    """A regular file attached to a loop device is in use (maybe mounted): refuse it."""
    try:
        real = os.path.realpath(path)
        ino = os.stat(real).st_ino
    except OSError:
        return
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        name = _read(backing).removesuffix(" (deleted)")
        try:
            same = os.path.realpath(name) == real and os.stat(name).st_ino == ino
        except OSError:
            continue
        if same:
            dev = backing.parent.parent.name
            raise TargetRefused(f"{path}: file is attached to /dev/{dev}; detach it first")


def check_not_system(target: Any, system_paths: tuple[str, ...] = SYSTEM_PATHS) -> None:
    """Refuse the disk that holds the running system (/, /boot ...), through dm/md layers."""
    devnum = _devnum(target)
    if devnum is None:
        return
    mine = _disk_and_parts(devnum)
    for path in system_paths:
        try:
            dev = os.stat(path).st_dev
        except OSError:
            continue
        if not os.major(dev):  # tmpfs/overlay roots have no block device behind them
            continue
        under = _underlying(f"{os.major(dev)}:{os.minor(dev)}")
        hit = under & mine
        if hit:
            raise TargetRefused(f"{target.identity.path}: holds the running system ({path} "
                                f"is on device {', '.join(sorted(hit))})")


def _underlying(num: str, depth: int = 0) -> set[str]:
    """``num`` plus its parent disk and every device below it (dm/md slaves, recursively)."""
    try:
        node = _sysdir(_parse_devnum(num))
    except ValueError:
        return set()
    found = {num}
    if (node / "partition").exists():
        found.add(_read(node.parent / "dev"))
    slaves = node / "slaves"
    if slaves.is_dir() and depth < 8:
        for slave in slaves.iterdir():
            found |= _underlying(_read(slave / "dev"), depth + 1)
    return {d for d in found if d}


def describe_target(target: Any) -> dict[str, Any]:
    """What will be overwritten: model, serial, size and the current partition table."""
    ident = target.identity
    info: dict[str, Any] = {"path": ident.path, "kind": ident.kind, "model": ident.model,
                            "serial": ident.serial, "size_bytes": ident.size_bytes,
                            "sector_size": ident.sector_size, "table": None}
    try:
        from imager.table import read_table
    except ImportError:
        info["table_error"] = "partition table support not available"
        return info
    from formats.errors import FormatError
    from imager.errors import DeviceError

    try:
        table = read_table(target)
    except (FormatError, DeviceError) as err:
        info["table_error"] = str(err)
        return info
    info["table"] = table.to_dict() if hasattr(table, "to_dict") else None
    return info


def _mountinfo() -> list[str]:
    try:
        return Path(MOUNTINFO).read_text().splitlines()
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _parse_devnum(num: str) -> int:
    major, minor = num.split(":")
    return os.makedev(int(major), int(minor))


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (proc(5))
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text
