"""GPT migration onto bigger disks: sgdisk is the oracle for every header byte."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from formats.errors import ChecksumMismatch, InvalidField
from formats.gpt import build_gpt_header, parse_gpt_header
from formats.gpt_build import fit_protective_mbr, relocate_backup
from imager.devices.file import FileTarget
from imager.migrate import MigrateSpec, compute_relocation
from imager.restore import restore
from imager.restore_plan import build_plan
from tests.conftest import loop_device, need_tool
from tests.restore_support import (
    ChunkedFileReader,
    MiB,
    e2fsck_clean,
    make_gpt_image,
    sgdisk_parts,
)

BIG = 12 * MiB


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]]]:
    need_tool("sgdisk", "mkfs.ext4", "e2fsck")
    path = tmp_path_factory.mktemp("migrate") / "src.img"
    return path, make_gpt_image(path)


def sgdisk(*args: str) -> str:
    proc = subprocess.run(["sgdisk", *args], check=False, capture_output=True, text=True)
    return proc.stdout + proc.stderr


def test_relocation_equals_what_sgdisk_e_writes(image, tmp_path: Path) -> None:
    src, _ = image
    data = src.read_bytes()
    oracle = tmp_path / "oracle.img"
    shutil.copy(src, oracle)
    with open(oracle, "r+b") as f:
        f.truncate(BIG)
    sgdisk("-e", str(oracle))  # sgdisk's own "move backup structures to the end of the disk"
    want = oracle.read_bytes()
    rel = relocate_backup(parse_gpt_header(data[512:1024], 1), data[1024:1024 + 32 * 512],
                          sector_size=512, new_sector_count=BIG // 512)
    assert build_gpt_header(rel.primary, 512) == want[512:1024]
    assert rel.backup.my_lba == BIG // 512 - 1
    assert build_gpt_header(rel.backup, 512) == want[-512:]
    assert rel.array == want[rel.backup.entry_lba * 512:-512] == want[1024:1024 + 32 * 512]
    pmbr = fit_protective_mbr(data[:512], BIG // 512)
    assert struct.unpack_from("<I", pmbr, 446 + 12) == struct.unpack_from("<I", want, 446 + 12)


def test_relocation_refuses_a_corrupt_header_and_a_too_small_disk(image, tmp_path: Path) -> None:
    src, _ = image
    data = bytearray(src.read_bytes())
    with pytest.raises(InvalidField, match="LastUsableLBA"):
        relocate_backup(parse_gpt_header(bytes(data[512:1024]), 1),
                        bytes(data[1024:1024 + 16384]), sector_size=512,
                        new_sector_count=len(data) // 512 - 100)
    data[512 + 40] ^= 1
    with pytest.raises(ChecksumMismatch, match="gpt header at LBA 1"):
        parse_gpt_header(bytes(data[512:1024]), 1)
    corrupt = tmp_path / "corrupt.img"
    corrupt.write_bytes(bytes(data))
    reader = ChunkedFileReader(corrupt)
    try:  # the migration path itself refuses it, before restore writes anything
        with pytest.raises(ChecksumMismatch, match="gpt header at LBA 1"):
            compute_relocation(reader, MigrateSpec(len(data) // 512, BIG // 512))
    finally:
        reader.close()


def restore_onto_bigger(src: Path, backing: Path, grow_last: bool):
    with open(backing, "wb") as f:
        f.truncate(BIG)
    with loop_device(backing) as dev:
        reader, target = ChunkedFileReader(src), FileTarget(dev)
        try:
            plan = build_plan(reader, target, grow_last=grow_last, include_identity=True)
            assert plan.migrate is not None
            return restore(reader, target, plan)
        finally:
            target.close()
            reader.close()


def test_migration_onto_a_larger_loop_device_passes_sgdisk_v(image, tmp_path: Path) -> None:
    src, parts = image
    backing = tmp_path / "big.img"
    result = restore_onto_bigger(src, backing, grow_last=False)
    assert result.gpt_migrated
    report = sgdisk("-v", str(backing))
    assert "No problems found" in report, report
    assert sgdisk_parts(backing) == parts
    data, want = backing.read_bytes(), src.read_bytes()
    for first, last in parts.values():
        assert data[first * 512:(last + 1) * 512] == want[first * 512:(last + 1) * 512]
    old_backup = len(want) - 512
    assert data[old_backup:old_backup + 512] == bytes(512)  # stale backup header wiped


def test_grow_last_extends_userdata_to_the_end(image, tmp_path: Path) -> None:
    src, parts = image
    backing = tmp_path / "big.img"
    result = restore_onto_bigger(src, backing, grow_last=True)
    report = sgdisk("-v", str(backing))
    assert "No problems found" in report, report
    info = sgdisk("-i", "5", str(backing))
    # 128 entries x 128 bytes = 32 sectors of backup array + 1 header at the end of the disk
    expected_last = BIG // 512 - 1 - 32 - 1
    assert f"Last sector: {expected_last} " in info, info
    assert f"First sector: {parts['userdata'][0]} " in info
    assert result.grown_partition == (5, parts["userdata"][1], expected_last)
    fsck = e2fsck_clean(backing, parts["userdata"][0], expected_last, tmp_path)
    assert fsck.returncode == 0, fsck.stdout


def test_cli_native_image_onto_a_bigger_file_with_grow_last(image, tmp_path, monkeypatch,
                                                            capsys) -> None:
    import io
    import json
    import sys

    from imager.cli import main

    src, parts = image
    native = tmp_path / "src.native"
    assert main(["acquire", str(src), str(native), "--quiet"]) == 0
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(BIG)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    code = main(["restore", str(native), str(big), "--yes", "--json", "--grow-last"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["gpt_migrated"] and any("GPT migrated" in n for n in summary["notes"])
    report = sgdisk("-v", str(big))
    assert "No problems found" in report, report
    grown = sgdisk_parts(big)
    assert grown["userdata"] == (parts["userdata"][0], BIG // 512 - 34)
    assert {k: v for k, v in grown.items() if k != "userdata"} == \
        {k: v for k, v in parts.items() if k != "userdata"}


def test_relocation_on_4k_sectors_equals_sgdisk_e(tmp_path: Path) -> None:
    small, big = tmp_path / "small4k.img", tmp_path / "big4k.img"
    with open(small, "wb") as f:
        f.truncate(8 * MiB)
    with loop_device(small, sector_size=4096) as dev:  # sgdisk lays out for 4096-byte LBAs
        out = sgdisk("-o", "-n", "1:0:+2M", "-c", "1:boot", "-n", "2:0:0", "-c", "2:data", dev)
        assert "operation has completed successfully" in out, out
    data = small.read_bytes()
    shutil.copy(small, big)
    with open(big, "r+b") as f:
        f.truncate(BIG)
    with loop_device(big, sector_size=4096) as dev:
        sgdisk("-e", dev)
        assert "No problems found" in sgdisk("-v", dev)
    want = big.read_bytes()
    n = BIG // 4096
    rel = relocate_backup(parse_gpt_header(data[4096:8192], 1), data[8192:8192 + 4 * 4096],
                          sector_size=4096, new_sector_count=n)
    assert rel.backup.my_lba == n - 1 and rel.backup.entry_lba == n - 5
    assert build_gpt_header(rel.primary, 4096) == want[4096:8192]
    assert build_gpt_header(rel.backup, 4096) == want[-4096:]
    assert rel.array == want[(n - 5) * 4096:-4096]
