"""Helpers for the EDL and fastboot tests: phone storage made by sgdisk, buses, oracles.

UFS LUNs (4096-byte sectors) are partitioned by ``sgdisk`` on a ``losetup --sector-size 4096``
loop device (sgdisk on a plain file assumes 512-byte sectors), then detached; the eMMC LUN
(512-byte sectors) by ``sgdisk`` on the file. Partition contents are random, with a zero band.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import loop_device, need_tool

MiB = 1 << 20
# LUN -> (size, sgdisk partition arguments or None for no table); names as on Qualcomm UFS
UFS_LAYOUT: dict[int, tuple[int, list[str] | None]] = {
    0: (4 * MiB, ["-n1:0:+1M", "-c1:userdata", "-n2:0:+512K", "-c2:metadata"]),
    1: (1 * MiB, ["-n1:0:+256K", "-c1:xbl_a", "-A1:set:50", "-n2:0:+256K", "-c2:xbl_b"]),
    2: (1 * MiB, ["-n1:0:+256K", "-c1:xbl_config_a", "-n2:0:+256K", "-c2:xbl_config_b"]),
    3: (2 * MiB, ["-n1:0:+512K", "-c1:cdt", "-n2:0:+512K", "-c2:ddr"]),
    4: (1 * MiB, None),
    5: (2 * MiB, ["-n1:0:+512K", "-c1:modemst1", "-n2:0:+512K", "-c2:boot_a",
                  "-n3:0:+512K", "-c3:boot_b"]),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_file(path: Path, size: int, seed: int) -> Path:
    """Deterministic random content with a zero band in the middle (every chunk kind)."""
    rnd = hashlib.shake_256(f"lun-{seed}".encode()).digest(size)
    data = bytearray(rnd)
    data[size // 2:size // 2 + size // 8] = bytes(size // 8)
    path.write_bytes(bytes(data))
    return path


def sgdisk(target: str, args: list[str]) -> None:
    need_tool("sgdisk")
    subprocess.run(["sgdisk", "-o", "-a", "8", *args, target], check=True,
                   capture_output=True)


_UFS: list[Path] = []


def ufs_master(factory: pytest.TempPathFactory) -> list[Path]:
    """The six LUN files, made once per test session (loop devices + sgdisk take seconds)."""
    if not _UFS or not all(p.exists() for p in _UFS):
        _UFS[:] = make_ufs(factory.mktemp("ufs"))
    return list(_UFS)


def make_ufs(directory: Path) -> list[Path]:
    """Six LUN files; LUN 4 has no partition table."""
    paths = []
    for lun, (size, parts) in UFS_LAYOUT.items():
        path = random_file(directory / f"ufs-lun{lun}.bin", size, lun)
        if parts is not None:
            with loop_device(path, sector_size=4096) as dev:
                sgdisk(dev, parts)
        paths.append(path)
    return paths


def make_emmc(directory: Path, size: int = 6 * MiB) -> Path:
    path = random_file(directory / "emmc.bin", size, 99)
    sgdisk(str(path), ["-n1:0:+1M", "-c1:boot", "-n2:0:+2M", "-c2:system", "-n3:0:0",
                       "-c3:userdata"])
    return path


def make_loader(directory: Path, size: int = 150_000) -> Path:
    """A stand-in programmer: any file works; the phone checks it arrived byte-exact."""
    path = directory / "prog_firehose_ddr.elf"
    path.write_bytes(b"\x7fELF" + os.urandom(size - 4))
    return path


def unpacked(image: Path) -> bytes:
    need_tool("zstd")
    return subprocess.run(["zstd", "-dcq", str(image)], check=True,
                          capture_output=True).stdout


