"""GPT header + entry array: schemas, CRCs, attributes, builders, hostile input.

Expected values come from sgdisk's own output, the spec (specs/gpt-mbr.md) or zlib, never from
our builder; the builder itself is checked against ``sgdisk -v`` and ``sgdisk -e``.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.errors import FormatError, InvalidField
from formats.gpt import (
    ENTRY,
    HEADER,
    AbFlags,
    GptEntry,
    GptHeader,
    build_entry_array,
    build_gpt_entry,
    build_gpt_header,
    decode_attributes,
    encode_name,
    parse_entry_array,
    parse_gpt_entry,
    parse_gpt_header,
    seal_header,
)
from formats.gpt_build import build_gpt, fit_protective_mbr, relocate_backup
from imager.devices.file import FileSource
from imager.table import read_table
from tests.tables_oracle import MemorySource, images, sgdisk_info, sgdisk_print, tool

__all__ = ["images"]
SS = 512


def _sectors(path: Path, lba: int, count: int = 1) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * SS)
        return f.read(count * SS)


def test_header_round_trip_and_crc(images: dict[str, Path]) -> None:
    sector = _sectors(images["small"], 1)
    header = parse_gpt_header(sector, 1)
    assert HEADER.sizeof() == 92 == header.header_size
    assert build_gpt_header(header, SS) == sector
    # the spec's CRC rule, computed here independently: field 16..20 zeroed
    assert header.header_crc32 == zlib.crc32(sector[:16] + bytes(4) + sector[20:92])
    assert header.entry_array_crc32 == zlib.crc32(_sectors(images["small"], 2, 32))


def test_entry_and_array_round_trip(images: dict[str, Path]) -> None:
    array = _sectors(images["phone"], 2, 32)
    entries = parse_entry_array(array, 128, 128)
    assert ENTRY.sizeof() == 128 and len(entries) == 128
    assert build_entry_array(entries, 128, 128) == array
    for i, entry in enumerate(entries):
        raw = array[i * 128:(i + 1) * 128]
        assert parse_gpt_entry(raw, i + 1) == entry
        assert build_gpt_entry(entry) == raw


def test_backup_copy_matches_spec(images: dict[str, Path]) -> None:
    n = sgdisk_print(images["small"])["sectors"]
    primary = parse_gpt_header(_sectors(images["small"], 1), 1)
    backup = parse_gpt_header(_sectors(images["small"], n - 1), n - 1)
    assert (backup.my_lba, backup.alternate_lba, primary.alternate_lba) == (n - 1, 1, n - 1)
    assert backup.entry_lba == n - 1 - 32
    assert backup.entry_array_crc32 == primary.entry_array_crc32
    assert backup.header_crc32 != primary.header_crc32
    assert _sectors(images["small"], backup.entry_lba, 32) == _sectors(images["small"], 2, 32)


def test_phone_partitions_match_sgdisk(images: dict[str, Path]) -> None:
    path = images["phone"]
    oracle = sgdisk_print(path)
    table = read_table(FileSource(str(path)))
    assert len(table.partitions) == len(oracle["partitions"]) >= 30
    assert (table.kind, table.disk_guid, table.first_usable_lba, table.last_usable_lba) == \
        ("gpt", oracle["disk_guid"], oracle["first_usable"], oracle["last_usable"])
    for part, row in zip(table.partitions, oracle["partitions"]):
        info = sgdisk_info(path, row["number"])
        assert (part.index, part.name, part.first_lba, part.last_lba) == \
            (row["number"], row["name"], row["start"], row["end"])
        assert (part.type_id, part.type_name, part.unique_guid, part.attributes) == \
            (info["type_guid"], info["type_name"], info["unique_guid"], info["attributes"])
    assert sum(b - a + 1 for a, b in table.gaps) == oracle["free_sectors"]


def _expected_ab_names(attrs: int) -> tuple[str, ...]:
    """Names per the spec's bit table, computed from sgdisk's attribute hex."""
    out = []
    prio, retry = attrs >> 48 & 3, attrs >> 51 & 7
    out += [f"ab_priority={prio}"] if prio else []
    out += ["ab_active"] if attrs >> 50 & 1 else []
    out += [f"ab_retry={retry}"] if retry else []
    out += ["ab_successful"] if attrs >> 54 & 1 else []
    out += ["ab_unbootable"] if attrs >> 55 & 1 else []
    return tuple(out)


def test_phone_ab_attributes_decoded(images: dict[str, Path]) -> None:
    table = read_table(FileSource(str(images["phone"])))
    slotted = [p for p in table.partitions if p.name.endswith(("_a", "_b"))]
    assert len(slotted) == 32
    for part in slotted:
        attrs = sgdisk_info(images["phone"], part.index)["attributes"]
        assert part.attribute_names == _expected_ab_names(attrs)
    boot_a = next(p for p in slotted if p.name == "boot_a")
    assert AbFlags.from_attributes(boot_a.attributes) == AbFlags(3, True, 3, True, False)
    assert "ab_unbootable" in next(p for p in slotted if p.name == "boot_b").attribute_names


def test_attribute_bits_from_spec() -> None:
    # edl writes byte 6 = 0x6F for the active boot slot (spec section 2)
    assert decode_attributes(0x6F << 48) == ("ab_priority=3", "ab_active", "ab_retry=5",
                                             "ab_successful")
    assert decode_attributes(1 | 4) == ("platform_required", "legacy_bios_bootable")
    ms = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    assert decode_attributes(1 << 60 | 1 << 63, ms) == ("read_only", "no_drive_letter")
    assert decode_attributes(1 << 60) == ("bit60",)


def test_name_decoding_never_fails() -> None:
    lone = struct.pack("<3H", 0x61, 0xD800, 0x62).ljust(72, b"\0")   # 'a', lone surrogate, 'b'
    entry = GptEntry("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "0" * 32, 1, 1, 0, lone)
    assert entry.name == "a\ufffdb"
    full = ("x" * 36).encode("utf-16-le")                            # no NUL at all
    assert GptEntry(entry.type_guid, entry.unique_guid, 1, 1, 0, full).name == "x" * 36
    with pytest.raises(InvalidField):
        encode_name("y" * 37)


def test_bounded_entry_geometry() -> None:
    with pytest.raises(InvalidField, match="entry_count"):
        parse_entry_array(b"", 0xFFFFFFFF, 0x80)
    with pytest.raises(InvalidField, match="entry_size"):
        parse_entry_array(b"", 1, 0xFFFF0000)


def _write(path: Path, writes: tuple[tuple[int, bytes], ...], ss: int = SS) -> None:
    with open(path, "r+b") as f:
        for lba, data in writes:
            f.seek(lba * ss)
            f.write(data)


def test_build_gpt_accepted_by_sgdisk(tmp_path: Path) -> None:
    path = tmp_path / "built.img"
    path.write_bytes(bytes(2 << 20))
    names = ["boot_a", "boot_b", "userdata"]
    entries = [GptEntry("49A4D17F-93A3-45C1-A0DE-F50B2EBE2599",
                        f"00000000-0000-4000-8000-00000000000{i}", 64 + 64 * i,
                        127 + 64 * i, 1 << 50 if i == 0 else 0, encode_name(n), i + 1)
               for i, n in enumerate(names)]
    gpt = build_gpt(entries, sector_size=SS, sector_count=4096,
                    disk_guid="11111111-2222-3333-4444-555555555555")
    _write(path, gpt.writes())
    assert "No problems found" in tool("sgdisk", "-v", str(path))
    oracle = sgdisk_print(path)
    assert [p["name"] for p in oracle["partitions"]] == names
    assert (oracle["first_usable"], oracle["last_usable"]) == (34, 4096 - 34)
    assert sgdisk_info(path, 1)["attributes"] == 1 << 50


def test_relocate_backup_equals_sgdisk_e(images: dict[str, Path], tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
    for p in (ours, theirs):
        shutil.copyfile(images["small"], p)
        subprocess.run(["truncate", "-s", "8M", str(p)], check=True)
    tool("sgdisk", "-e", str(theirs))
    primary = parse_gpt_header(_sectors(ours, 1), 1)
    moved = relocate_backup(primary, _sectors(ours, 2, 32), sector_size=SS,
                            new_sector_count=16384)
    _write(ours, moved.writes())
    for lba, count in ((1, 33), (16384 - 33, 33)):
        assert _sectors(ours, lba, count) == _sectors(theirs, lba, count)
    with pytest.raises(InvalidField):
        relocate_backup(primary, _sectors(ours, 2, 32), sector_size=SS, new_sector_count=4000)


guids = st.uuids().map(lambda u: str(u).upper())


@st.composite
def gpt_tables(draw: st.DrawFn) -> tuple[list[GptEntry], int]:
    count = draw(st.integers(0, 12))
    slots = draw(st.lists(st.integers(1, 128), min_size=count, max_size=count, unique=True))
    entries, lba = [], 34
    for slot in slots:
        lba += draw(st.integers(0, 20))
        size = draw(st.integers(1, 50))
        name = draw(st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)),
                            max_size=36).filter(lambda s: "\0" not in s))
        type_guid = draw(guids.filter(lambda g: g != "00000000-0000-0000-0000-000000000000"))
        entries.append(GptEntry(type_guid, draw(guids), lba, lba + size - 1,
                                draw(st.integers(0, 2**64 - 1)), encode_name(name), slot))
        lba += size
    return entries, lba + 34 + draw(st.integers(0, 100))


@settings(max_examples=40, deadline=None)
@given(gpt_tables(), guids)
def test_generated_tables_round_trip(table: tuple[list[GptEntry], int], disk: str) -> None:
    entries, sectors = table
    gpt = build_gpt(entries, sector_size=SS, sector_count=sectors, disk_guid=disk)
    disk_bytes = bytearray(sectors * SS)
    for lba, data in gpt.writes():
        disk_bytes[lba * SS:lba * SS + len(data)] = data
    got = read_table(MemorySource(bytes(disk_bytes)))
    assert (got.kind, got.disk_guid, got.primary_health, got.backup_health) == \
        ("gpt", disk, "ok", "ok")
    want = sorted((e.index, e.name, e.first_lba, e.last_lba, e.type_guid, e.unique_guid,
                   e.attributes) for e in entries)
    assert [(p.index, p.name, p.first_lba, p.last_lba, p.type_id, p.unique_guid, p.attributes)
            for p in got.partitions] == want
    array = bytes(disk_bytes[2 * SS:34 * SS])
    assert build_entry_array(parse_entry_array(array, 128, 128), 128) == array


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzzed_schema_input_raises_only_format_errors(data: bytes, count: int,
                                                       size: int) -> None:
    for call in (lambda: parse_gpt_header(b"EFI PART" + data, 1),
                 lambda: parse_gpt_header(data, 1),
                 lambda: parse_entry_array(data, count % 64, size % 1024),
                 lambda: parse_entry_array(data, count, size),
                 lambda: parse_gpt_entry(data)):
        try:
            call()
        except FormatError:
            pass


u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


@settings(max_examples=100, deadline=None)
@given(u32, st.integers(92, 512), u64, u64, u64, u64, guids, u64, u32, u32, u32, u32,
       st.binary(min_size=420, max_size=420))
def test_generated_headers_round_trip(rev: int, size: int, my: int, alt: int, first: int,
                                      last: int, disk: str, entry_lba: int, count: int,
                                      esize: int, acrc: int, reserved: int,
                                      tail: bytes) -> None:
    header = seal_header(GptHeader(rev, size, 0, my, alt, first, last, disk, entry_lba, count,
                                   esize, acrc, reserved, tail=tail))
    raw = build_gpt_header(header, SS)
    assert len(raw) == SS and raw[:8] == b"EFI PART"
    # CRC per the spec, computed here: the first header_size bytes with bytes 16..20 zeroed
    assert header.header_crc32 == zlib.crc32(raw[:16] + bytes(4) + raw[20:size])
    assert parse_gpt_header(raw, my) == header
    assert build_gpt_header(parse_gpt_header(raw), SS) == raw


def test_relocate_backup_grow_last_checked_by_sgdisk(images: dict[str, Path],
                                                     tmp_path: Path) -> None:
    small, theirs, ours = images["small"].read_bytes(), tmp_path / "e.img", tmp_path / "g.img"
    theirs.write_bytes(small.ljust(16384 * SS, b"\0"))
    tool("sgdisk", "-e", str(theirs))  # the oracle for the moved backup and LastUsableLBA
    moved = relocate_backup(parse_gpt_header(small[SS:2 * SS], 1), small[2 * SS:34 * SS],
                            sector_size=SS, new_sector_count=16384, grow_last=True)
    disk = bytearray(small.ljust(16384 * SS, b"\0"))
    for lba, data in moved.writes() + ((0, fit_protective_mbr(small[:SS], 16384)),):
        disk[lba * SS:lba * SS + len(data)] = data
    ours.write_bytes(disk)
    assert "No problems found" in tool("sgdisk", "-v", str(ours))
    # sgdisk -e fits the 0xEE record's size too; it also recomputes the legacy end CHS
    # (bytes 451..453), which we keep as the image had it
    mine, sgdisks = _sectors(ours, 0), _sectors(theirs, 0)
    assert mine[:451] + mine[454:] == sgdisks[:451] + sgdisks[454:]
    assert struct.unpack_from("<I", mine, 446 + 12) == (16383,)
    last_usable = sgdisk_print(theirs)["last_usable"]
    before, after = sgdisk_print(images["small"]), sgdisk_print(ours)
    assert after["last_usable"] == last_usable
    assert after["partitions"][:2] == before["partitions"][:2]
    old = sgdisk_info(images["small"], 3)  # "data", the partition that ends last
    assert sgdisk_info(ours, 3) == old | {"last": last_usable}
    assert moved.grown == (3, old["last"], last_usable)


def test_relocate_backup_refusals_and_pmbr_left_alone(images: dict[str, Path]) -> None:
    n = sgdisk_print(images["small"])["sectors"]
    backup = parse_gpt_header(_sectors(images["small"], n - 1), n - 1)
    array = _sectors(images["small"], 2, 32)
    with pytest.raises(InvalidField, match="my_lba"):
        relocate_backup(backup, array, sector_size=SS, new_sector_count=2 * n)
    empty = build_gpt([], sector_size=SS, sector_count=n,
                      disk_guid="11111111-2222-3333-4444-555555555555")
    with pytest.raises(InvalidField, match="--grow-last needs at least one partition"):
        relocate_backup(empty.primary, empty.array, sector_size=SS, new_sector_count=2 * n,
                        grow_last=True)
    for name in ("hybrid", "mbr_logical", "notable"):  # their MBR describes partitions itself
        assert fit_protective_mbr(_sectors(images[name], 0), 2 * n) is None
