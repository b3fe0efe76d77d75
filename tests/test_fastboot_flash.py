"""``imager restore IMAGE fastboot: --partition NAME`` through real pyusb on the emulator.

Oracles: the partition bytes of a disk image made by ``sgdisk`` (LBAs from ``sgdisk -i``), a
sparse image made by AOSP ``img2simg``, and the emulated bootloader, which expands what it
receives with its own sparse parser (fixtures/usbemu/fastboot.py) onto its backing files.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures.usbemu import EmuBackend
from fixtures.usbemu.fastboot import FastbootPhone
from imager.cli import main
from tests.conftest import need_tool
from tests.edl_support import random_file, sgdisk

KiB, MiB = 1 << 10, 1 << 20
MAX_DOWNLOAD = 256 * KiB


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A 512-byte-sector disk: boot_a/boot_b 512K, system_a/system_b 1M (> max-download)."""
    path = random_file(tmp_path / "disk.img", 4 * MiB, 7)
    sgdisk(str(path), ["-n1:0:+512K", "-c1:boot_a", "-n2:0:+512K", "-c2:boot_b",
                       "-n3:0:+1M", "-c3:system_a", "-n4:0:+1M", "-c4:system_b"])
    return path


def part_range(disk: Path, number: int) -> tuple[int, int]:
    """(first byte, length) of partition ``number``, as sgdisk -i reports it."""
    out = subprocess.run(["sgdisk", "-i", str(number), str(disk)], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    first = int(fields["First sector"].split()[0])
    last = int(fields["Last sector"].split()[0])
    return first * 512, (last - first + 1) * 512


@pytest.fixture
def phone(bus: EmuBackend, tmp_path: Path) -> FastbootPhone:
    """Partitions start with other random content, so a DONT_CARE written as zeros shows."""
    sizes = {"boot_a": 512 * KiB, "boot_b": 512 * KiB, "system_a": MiB, "system_b": MiB,
             "misc": 64 * KiB}
    parts = {name: random_file(tmp_path / f"dev-{name}.bin", size, 100 + i)
             for i, (name, size) in enumerate(sizes.items())}
    return bus.attach(FastbootPhone(parts, max_download=MAX_DOWNLOAD, serial="FB42"))


def flash(image: Path, *extra: str) -> int:
    return main(["restore", str(image), "fastboot:@FB42", "--yes", "--quiet", *extra])


def test_partition_larger_than_max_download_arrives_byte_exact(
        disk: Path, phone: FastbootPhone) -> None:
    before_b = phone.partitions["system_b"].read_bytes()
    assert flash(disk, "--partition", "system") == 0          # no suffix: current slot (a)
    start, length = part_range(disk, 3)
    assert length > MAX_DOWNLOAD
    assert phone.partitions["system_a"].read_bytes() == disk.read_bytes()[start:start + length]
    assert phone.partitions["system_b"].read_bytes() == before_b
    assert len(phone.downloads) >= 4 and max(phone.downloads) <= MAX_DOWNLOAD
    assert {f for f in phone.flashed} == {("system_a", "sparse")}
    assert "getvar:max-download-size" in phone.commands


def test_native_image_to_an_explicit_slot(disk: Path, phone: FastbootPhone,
                                          tmp_path: Path) -> None:
    native = tmp_path / "disk.imgz"
    assert main(["acquire", str(disk), str(native), "--quiet"]) == 0
    assert flash(native, "--partition", "boot_b") == 0
    start, length = part_range(disk, 2)
    assert phone.partitions["boot_b"].read_bytes() == disk.read_bytes()[start:start + length]
    assert {name for name, _ in phone.flashed} == {"boot_b"}


def test_android_sparse_partition_image(phone: FastbootPhone, tmp_path: Path) -> None:
    need_tool("img2simg")
    raw = random_file(tmp_path / "boot.img", 512 * KiB, 5)   # a zero band: img2simg FILLs it
    simg = tmp_path / "boot.simg"
    subprocess.run(["img2simg", str(raw), str(simg)], check=True, capture_output=True)
    assert flash(simg, "--partition", "boot") == 0
    assert phone.partitions["boot_a"].read_bytes() == raw.read_bytes()


def test_fail_is_reported_verbatim(disk: Path, bus: EmuBackend, phone: FastbootPhone,
                                   capsys: pytest.CaptureFixture) -> None:
    phone.fail["flash:boot_a"] = "Partition flashing is not allowed"
    before = phone.partitions["boot_a"].read_bytes()
    assert flash(disk, "--partition", "boot_a") == 1
    err = capsys.readouterr().err
    assert "flash:boot_a: FAILPartition flashing is not allowed" in err
    assert phone.partitions["boot_a"].read_bytes() == before


def test_content_larger_than_the_partition_is_refused(phone: FastbootPhone,
                                                      tmp_path: Path) -> None:
    big = random_file(tmp_path / "big.img", 128 * KiB, 3)
    assert flash(big, "--partition", "misc") == 2
    assert phone.downloads == []


def test_fastboot_needs_a_partition_and_cannot_be_acquired(disk: Path, phone: FastbootPhone,
                                                           tmp_path: Path) -> None:
    assert flash(disk) == 2
    assert main(["acquire", "fastboot:@FB42", str(tmp_path / "x.imgz"), "--quiet"]) == 2
    assert phone.downloads == []


def test_logical_partition_needs_fastbootd(disk: Path, phone: FastbootPhone,
                                           capsys: pytest.CaptureFixture) -> None:
    phone.logical = ("system_a", "system_b")
    assert flash(disk, "--partition", "system") == 2
    assert "logical partition" in capsys.readouterr().err and phone.downloads == []
    phone.userspace = True                                     # fastbootd flashes it
    assert flash(disk, "--partition", "system") == 0
    start, length = part_range(disk, 3)
    assert phone.partitions["system_a"].read_bytes() == disk.read_bytes()[start:start + length]


def test_decimal_sizes_from_an_old_bootloader(disk: Path, phone: FastbootPhone) -> None:
    phone.hex_sizes = False                   # "262144" instead of "0x40000"
    assert flash(disk, "--partition", "boot_a") == 0
    start, length = part_range(disk, 1)
    assert phone.partitions["boot_a"].read_bytes() == disk.read_bytes()[start:start + length]
    assert max(phone.downloads) <= MAX_DOWNLOAD


def test_flashing_asks_first(disk: Path, phone: FastbootPhone,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    before = phone.partitions["boot_a"].read_bytes()
    assert main(["restore", str(disk), "fastboot:@FB42", "--partition", "boot_a",
                 "--quiet"]) == 2
    assert phone.downloads == [] and phone.partitions["boot_a"].read_bytes() == before


def test_erase_first_leaves_the_uncovered_part_erased(phone: FastbootPhone,
                                                       tmp_path: Path) -> None:
    content = random_file(tmp_path / "boot.img", 128 * KiB, 9)   # no table: the content itself
    before = phone.partitions["boot_a"].read_bytes()
    assert flash(content, "--partition", "boot_a") == 0
    after = phone.partitions["boot_a"].read_bytes()
    assert after[:128 * KiB] == content.read_bytes() and after[128 * KiB:] == before[128 * KiB:]
    assert flash(content, "--partition", "boot_a", "--erase-first") == 0
    after = phone.partitions["boot_a"].read_bytes()
    assert after[:128 * KiB] == content.read_bytes()
    assert after[128 * KiB:] == b"\xff" * (len(after) - 128 * KiB)   # the emulator's erased value
    erased_at = phone.commands.index("erase:boot_a")
    assert "flash:boot_a" in phone.commands[erased_at + 1:]          # erase, then flash
    assert main(["restore", str(content), str(tmp_path / "t.img"), "--yes", "--erase-first"]) == 2


def test_json_summary_names_slot_type_and_pieces(disk: Path, phone: FastbootPhone,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restore", str(disk), "fastboot:@FB42", "--yes", "--json",
                 "--partition", "system"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (flashed,) = summary["flashed"]
    assert flashed["partition"] == "system_a" and flashed["partition_type"] == "raw"
    assert flashed["bytes"] == part_range(disk, 3)[1] and flashed["erased"] is False
    assert sum(flashed["pieces"]) == sum(phone.downloads) and summary["verified"] is False
