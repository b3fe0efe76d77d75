"""The acquire/verify/show/extract/export verbs end to end (oracles: sgdisk, zstd, coreutils)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.acquire_support import (
    cli,
    file_sha256,
    flip_bit,
    phone,
    sgdisk_partitions,
    show_json,
    tool_hash,
    zstd_d_sha256,
)
from tests.conftest import loop_device, need_tool

__all__ = ["phone"]
SECTOR = 512


@pytest.fixture(scope="module")
def phone_image(phone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("cli") / "phone.imgz"
    code, out, err = cli("acquire", str(phone), str(image), "--quiet", "--json",
                         "--case", "K-1", "--evidence", "E-9", "--notes", "seized 1/1")
    assert code == 0, err
    assert json.loads(out)["hashes"]["sha256"] == tool_hash("sha256sum", phone)
    return image


def region(path: Path, first: int, last: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(first * SECTOR)
        return f.read((last - first + 1) * SECTOR)


def decompressed(image: Path, out: Path) -> Path:
    need_tool("zstd")
    subprocess.run(["zstd", "-d", "-q", "-f", str(image), "-o", str(out)], check=True)
    return out


def test_verify_and_show(phone: Path, phone_image: Path) -> None:
    code, out, _ = cli("verify", "--quiet", str(phone_image))
    assert code == 0 and "verified" in out
    code, out, _ = cli("show", str(phone_image))
    assert code == 0 and "'userdata'" in out and tool_hash("sha256sum", phone) in out
    info = show_json(phone_image)
    assert info["case"] == {"case": "K-1", "evidence": "E-9", "notes": "seized 1/1"}
    assert [(p["name"], p["first_lba"], p["last_lba"]) for p in info["partitions"]] \
        == sgdisk_partitions(phone)


def test_extract_every_partition(phone: Path, phone_image: Path, tmp_path: Path) -> None:
    parts = sgdisk_partitions(phone)
    assert len(parts) == 33
    for name, first, last in parts:
        out = tmp_path / f"p{first}.bin"
        code, _, err = cli("extract", str(phone_image), "--partition", name, "-o", str(out))
        assert code == 0, err
        assert out.read_bytes() == region(phone, first, last), name
    code, _, err = cli("extract", str(phone_image), "--partition", "nope", "-o",
                       str(tmp_path / "x"))
    assert code == 2 and "no partition named 'nope'" in err and "userdata" in err


def test_selection_records_not_acquired(phone: Path, tmp_path: Path) -> None:
    image = tmp_path / "sel.imgz"
    code, _, err = cli("acquire", str(phone), str(image), "--quiet", "--partition", "boot_*",
                       "--partition", "system_a")
    assert code == 0, err
    raw = decompressed(image, tmp_path / "sel.raw")
    parts = {name: (first, last) for name, first, last in sgdisk_partitions(phone)}
    for name, (first, last) in parts.items():
        want = region(phone, first, last) if name in ("boot_a", "boot_b", "system_a") \
            else bytes((last - first + 1) * SECTOR)
        assert region(raw, first, last) == want, name
    total = phone.stat().st_size // SECTOR
    assert region(raw, 0, 33) == region(phone, 0, 33)                      # MBR + primary GPT
    assert region(raw, total - 33, total - 1) == region(phone, total - 33, total - 1)
    info = show_json(image)
    not_acq = info["not_acquired"]
    assert [34, 14336 - 34] == not_acq[0]           # up to boot_a (sgdisk: 14336)
    assert sum(c for _, c in not_acq) == total - 34 - 33 - sum(
        parts[n][1] - parts[n][0] + 1 for n in ("boot_a", "boot_b", "system_a"))
    assert cli("verify", "--quiet", str(image))[0] == 0
    code, _, err = cli("extract", str(image), "--partition", "userdata", "-o",
                       str(tmp_path / "u.bin"))
    # a partition that was never read is refused, never handed out as zeros
    assert code == 2 and "'userdata' was not acquired" in err
    assert not (tmp_path / "u.bin").exists()


def test_exclude(phone: Path, tmp_path: Path) -> None:
    image = tmp_path / "ex.imgz"
    assert cli("acquire", str(phone), str(image), "--quiet", "--exclude", "userdata")[0] == 0
    first, last = next((f, la) for n, f, la in sgdisk_partitions(phone) if n == "userdata")
    assert show_json(image)["not_acquired"] == [[first, last - first + 1]]


def test_raw_format(phone: Path, tmp_path: Path) -> None:
    image = tmp_path / "phone.raw"
    assert cli("acquire", str(phone), str(image), "--quiet", "--format", "raw")[0] == 0
    assert file_sha256(image) == tool_hash("sha256sum", phone)
    assert os.stat(image).st_blocks * 512 < phone.stat().st_size * 0.9   # zero chunks are holes
    assert Path(str(image) + ".json").exists()
    assert cli("verify", "--quiet", str(image))[0] == 0
    flip_bit(image, 40 * 2048 * SECTOR + 12345)                # inside chunk 10 (4 MiB)
    code, out, _ = cli("verify", "--quiet", str(image))
    assert code == 3 and "BAD chunk 10 " in out


def test_export_raw(phone: Path, phone_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported.raw"
    assert cli("export", str(phone_image), "--to", "raw", str(out))[0] == 0
    assert file_sha256(out) == tool_hash("sha256sum", phone)
    assert cli("verify", "--quiet", str(out))[0] == 0
    code, _, err = cli("export", str(phone_image), "--to", "raw", str(out))
    assert code == 2 and "already exists" in err


def test_verify_against_names_differing_ranges(phone: Path, phone_image: Path,
                                               tmp_path: Path) -> None:
    assert cli("verify", "--quiet", str(phone_image), "--against", str(phone))[0] == 0
    changed = tmp_path / "changed.img"
    shutil.copyfile(phone, changed)
    with open(changed, "r+b") as f:
        f.seek(5000 * SECTOR + 10)
        f.write(b"\xaa" * (2 * SECTOR))                       # touches LBA 5000..5002
    code, out, _ = cli("verify", "--quiet", str(phone_image), "--against", str(changed))
    assert code == 3 and "DIFFERS from source: LBA 5000-5002 (3 sectors)" in out


def test_loop_device_round_trip(phone: Path, tmp_path: Path) -> None:
    image = tmp_path / "loop.imgz"
    with loop_device(phone, readonly=True) as dev:
        code, _, err = cli("acquire", dev, str(image), "--quiet")
        assert code == 0, err
        assert cli("verify", "--quiet", str(image), "--against", dev)[0] == 0
    assert zstd_d_sha256(image) == tool_hash("sha256sum", phone)
    assert show_json(image)["source"]["kind"] == "block"


def test_partition_names_never_become_paths(tmp_path: Path) -> None:
    need_tool("sgdisk")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sgdisk", "-n", "1:2048:4095", "-c", "1:../../evil", "-n", "2:4096:6143",
                    "-c", "2:/tmp/abs", str(disk)], check=True, capture_output=True)
    with open(disk, "r+b") as f:
        f.seek(2048 * SECTOR)
        f.write(b"E" * (2048 * SECTOR))
    image = tmp_path / "d.imgz"
    assert cli("acquire", str(disk), str(image), "--quiet")[0] == 0
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = work / "out.bin"
    code, _, err = cli("extract", str(image), "--partition", "../../evil", "-o", str(out))
    assert code == 0, err
    assert out.read_bytes() == b"E" * (2048 * SECTOR)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(before + ["out.bin"])
    assert not Path("/tmp/abs").exists()


@pytest.mark.parametrize("args,needle", [
    (("--size", "1M"), "only for reading from stdin"),
    (("--hash", "crc"), "choose from md5"),
    (("--partition", "nope"), "matches no partition"),
    (("--chunk-size", "1000"), "multiple of the 512-byte sector"),
])
def test_usage_errors(phone: Path, tmp_path: Path, args: tuple, needle: str) -> None:
    code, _, err = cli("acquire", str(phone), str(tmp_path / "x.imgz"), "--quiet", *args)
    assert code == 2 and needle in err
    assert not (tmp_path / "x.imgz").exists()


def test_loop_device_with_4096_byte_sectors(phone: Path, tmp_path: Path) -> None:
    image = tmp_path / "loop4k.imgz"
    with loop_device(phone, sector_size=4096, readonly=True) as dev:
        code, _, err = cli("acquire", dev, str(image), "--quiet")
        assert code == 0, err
    assert zstd_d_sha256(image) == tool_hash("sha256sum", phone)
    info = show_json(image)
    assert (info["sector_size"], info["sector_count"]) == (4096, phone.stat().st_size // 4096)
    assert info["chunk_sectors"] == 1024   # 4 MiB
