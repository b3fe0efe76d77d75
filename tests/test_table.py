"""read_table: choice of GPT/MBR/none, recovery from a damaged copy, 4096-byte sectors, fuzzing."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures import tables
from formats.errors import FormatError, Truncated
from formats.gpt import NoValidGpt
from formats.table import find_partition
from imager.devices.file import FileSource
from imager.table import read_metadata, read_table
from tests.conftest import loop_device, need_tool
from tests.tables_oracle import MemorySource, images, mmls, sfdisk_free, sgdisk_print

__all__ = ["images"]


def _read(path: Path, sector_size: int | None = None):
    with FileSource(str(path), sector_size=sector_size) as src:
        return read_table(src)


def _layout(table) -> list[tuple[int, str, int, int]]:
    return [(p.index, p.name, p.first_lba, p.last_lba) for p in table.partitions]


def _sgdisk_layout(path: Path | str) -> list[tuple[int, str, int, int]]:
    return [(p["number"], p["name"], p["start"], p["end"])
            for p in sgdisk_print(path)["partitions"]]


@pytest.mark.parametrize("name, primary, backup", [
    ("bad_primary_header", "bad: header CRC mismatch", "ok"),
    ("bad_primary_array", "bad: entry array CRC mismatch", "ok"),
    ("bad_backup", "ok", "missing"),
])
def test_recovers_from_one_damaged_copy(images: dict[str, Path], name: str, primary: str,
                                        backup: str) -> None:
    table = _read(images[name])
    assert table.primary_health.startswith(primary)
    assert table.backup_health == backup
    assert _layout(table) == _sgdisk_layout(images["small"])
    using = "using the backup" if backup == "ok" else "using the primary"
    assert len(table.warnings) == 1 and using in table.warnings[0]


def test_both_copies_broken_lists_every_reason(images: dict[str, Path]) -> None:
    with pytest.raises(NoValidGpt) as err:
        _read(images["bad_both"])
    msg = str(err.value)
    assert "\n" not in msg
    assert "primary at LBA 1 (header CRC mismatch" in msg
    assert "backup at LBA 8191 (header CRC mismatch" in msg


def test_mismatched_copies_are_reported(images: dict[str, Path], tmp_path: Path) -> None:
    # the backup of a disk with another GUID spliced onto the small disk (a construction)
    other = tmp_path / "other.img"
    tables.blank(other, 4 * tables.MiB)
    tables.run(["sgdisk", *[a if a != tables.DISK_GUID else "R" for a in tables.SMALL_ARGS],
                str(other)])
    mixed = tmp_path / "mixed.img"
    shutil.copyfile(images["small"], mixed)
    tail = other.read_bytes()[-33 * 512:]
    with open(mixed, "r+b") as f:
        f.seek(-33 * 512, 2)
        f.write(tail)
    table = _read(mixed)
    assert (table.primary_health, table.backup_health) == ("ok", "ok")
    assert table.disk_guid == sgdisk_print(images["small"])["disk_guid"]
    assert any("differ in disk_guid" in w for w in table.warnings)


def test_backup_not_at_end_is_reported(images: dict[str, Path], tmp_path: Path) -> None:
    bigger = tmp_path / "bigger.img"
    shutil.copyfile(images["small"], bigger)
    subprocess.run(["truncate", "-s", "5M", str(bigger)], check=True)
    table = _read(bigger)
    assert table.backup_health == "ok"
    assert any("not at the last LBA 10239" in w for w in table.warnings)


def test_gaps_and_metadata_match_tools(images: dict[str, Path]) -> None:
    table = _read(images["hostile"])
    assert list(table.gaps) == sfdisk_free(images["hostile"])
    meta = {(e.start_lba, e.count) for e in table.metadata_extents}
    n = table.sector_count
    assert meta == {(0, 34), (n - 33, 33)}
    for row in mmls(images["hostile"]):
        if row["slot"] == "Meta":
            assert any(s <= row["start"] and row["end"] < s + c for s, c in meta), row


def test_read_metadata_returns_the_sectors(images: dict[str, Path]) -> None:
    raw = images["mbr_logical"].read_bytes()
    with FileSource(str(images["mbr_logical"])) as src:
        got = read_metadata(src, read_table(src))
    assert [e.start_lba for e, _ in got] == [0, 4096, 8192, 12288]
    for ext, data in got:
        assert data == raw[ext.start_lba * 512:ext.end_lba * 512]


def test_no_table(images: dict[str, Path]) -> None:
    table = _read(images["notable"])
    assert (table.kind, table.partitions, table.gaps) == ("none", (), ((0, 8191),))
    assert read_table(MemorySource(bytes(1 << 16))).kind == "none"
    with pytest.raises(Truncated):
        read_table(MemorySource(b""))


def test_find_partition(images: dict[str, Path]) -> None:
    table = _read(images["phone"])
    part = find_partition(table, "boot_b")
    row = next(p for p in sgdisk_print(images["phone"])["partitions"] if p["name"] == "boot_b")
    assert (part.first_lba, part.last_lba) == (row["start"], row["end"])
    assert find_partition(table, "nope") is None


def test_4096_sector_gpt_on_loop_device(tmp_path: Path) -> None:
    need_tool("sgdisk", "losetup")
    image = tables.make_gpt_4k(tmp_path, loop_device)
    with loop_device(image, sector_size=4096, readonly=True) as dev:
        oracle = sgdisk_print(dev)
        with FileSource(dev) as src:
            table = read_table(src)
    assert oracle["sector_size"] == 4096 == table.sector_size
    assert (table.first_usable_lba, table.last_usable_lba) == \
        (oracle["first_usable"], oracle["last_usable"])
    assert _layout(table) == [(p["number"], p["name"], p["start"], p["end"])
                              for p in oracle["partitions"]]
    # the same image as a plain file: found at byte 4096, reported in 512-byte units
    as_file = _read(image)
    assert (as_file.sector_size, as_file.detected_sector_size) == (512, 4096)
    assert [(p.first_lba, p.last_lba) for p in as_file.partitions] == \
        [(p["start"] * 8, p["end"] * 8 + 7) for p in oracle["partitions"]]
    assert _layout(_read(image, 4096)) == _layout(table)


def _small_disk(images: dict[str, Path]) -> bytes:
    return images["small"].read_bytes()


def _flip_position(off: int, near: int, size: int) -> int:
    """Spread flips: anywhere, in the sectors around LBA ``near``, or in the backup copy."""
    if off % 3 == 0:
        return off % size
    if off % 3 == 1:
        return near * 512 + off % 1024
    return size - 1 - off % (33 * 512)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2**22), st.integers(1, 255)), min_size=1, max_size=8),
       st.sampled_from([0, 1, 2, 33]))
def test_fuzzed_disks_raise_only_format_errors(images: dict[str, Path],
                                               flips: list[tuple[int, int]],
                                               near: int) -> None:
    disk = bytearray(_small_disk(images))
    for off, xor in flips:
        disk[_flip_position(off, near, len(disk))] ^= xor
    try:
        table = read_table(MemorySource(bytes(disk)))
    except FormatError:
        return
    assert table.kind in ("gpt", "mbr", "none")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 8192), st.sampled_from(["small", "mbr_logical", "hybrid"]))
def test_truncated_disks_raise_only_format_errors(images: dict[str, Path], sectors: int,
                                                  name: str) -> None:
    data = images[name].read_bytes()[:sectors * 512]
    try:
        read_table(MemorySource(data))
    except FormatError:
        pass


def _hostile_header(**fields: int) -> bytes:
    """A GPT header built by hand (spec section 2 offsets) with a correct CRC."""
    v = {"size": 92, "my": 1, "alt": 127, "first": 34, "last": 94, "entry_lba": 2,
         "count": 128, "esize": 128} | fields
    head = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, v["size"], 0, 0, v["my"],
                       v["alt"], v["first"], v["last"], bytes(16), v["entry_lba"], v["count"],
                       v["esize"], 0)
    covered = head[:min(v["size"], 512)].ljust(min(v["size"], 512), b"\0")
    head = head[:16] + struct.pack("<I", zlib.crc32(covered)) + head[20:]
    return head.ljust(512, b"\0")


@pytest.mark.parametrize("fields, reason", [
    ({"count": 0xFFFFFFFF}, "invalid entry_count"),
    ({"esize": 0xFFFFFF80}, "invalid entry_size"),
    ({"esize": 0}, "invalid entry_size"),
    ({"entry_lba": 2**63}, "invalid entry_lba"),
    ({"last": 2**64 - 1}, "invalid last_usable_lba"),
    ({"my": 7}, "invalid my_lba"),
    ({"size": 0xFFFFFFFF}, "invalid header_size"),
])
def test_hostile_header_fields_are_refused(fields: dict[str, int], reason: str) -> None:
    disk = bytes(512) + _hostile_header(**fields) + bytes(126 * 512)
    with pytest.raises(NoValidGpt) as err:
        read_table(MemorySource(disk))
    assert f"primary at LBA 1 ({reason}" in str(err.value)


def test_stale_gpt_signature_on_mbr_disk_is_a_warning(images: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "stale.img"
    shutil.copyfile(images["mbr_logical"], path)
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(b"EFI PART" + bytes(84))   # a leftover signature, header garbage
    table = _read(path)
    assert table.kind == "mbr" and len(table.partitions) == 5
    assert "GPT signature found but unusable" in table.warnings[0]
