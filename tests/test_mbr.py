"""MBR, protective/hybrid MBR and EBR chains, checked against sfdisk and mmls."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from formats.errors import FormatError
from formats.mbr import (
    MBR_SECTOR,
    RECORD,
    Mbr,
    MbrRecord,
    build_mbr,
    build_record,
    classify_mbr,
    parse_mbr,
    parse_record,
    walk_ebr_chain,
)
from imager.devices.file import FileSource
from imager.table import read_table
from tests.tables_oracle import MemorySource, images, mmls, sfdisk_json

__all__ = ["images"]


def _sector0(path: Path) -> bytes:
    return path.read_bytes()[:512]


def test_mbr_fixture_round_trip(images: dict[str, Path]) -> None:
    for name in ("mbr_logical", "hybrid", "small"):
        raw = _sector0(images[name])
        mbr = parse_mbr(raw)
        assert MBR_SECTOR.sizeof() == 512 and RECORD.sizeof() == 16
        assert build_mbr(mbr) == raw
        for i, rec in enumerate(mbr.records):
            assert build_record(rec) == raw[446 + 16 * i:462 + 16 * i]
            assert parse_record(raw[446 + 16 * i:]) == rec


records = st.builds(MbrRecord, st.integers(0, 255), st.binary(min_size=3, max_size=3),
                    st.integers(0, 255), st.binary(min_size=3, max_size=3),
                    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


@settings(max_examples=100, deadline=None)
@given(st.lists(records, min_size=4, max_size=4), st.integers(0, 2**32 - 1),
       st.binary(min_size=440, max_size=440), st.binary(min_size=2, max_size=2))
def test_generated_mbr_round_trips(recs: list[MbrRecord], sig: int, code: bytes,
                                   reserved: bytes) -> None:
    mbr = Mbr(tuple(recs), sig, code, reserved)
    raw = build_mbr(mbr)
    assert len(raw) == 512 and raw[510:] == b"\x55\xaa"
    assert parse_mbr(raw) == mbr
    assert build_mbr(parse_mbr(raw)) == raw


def test_logical_partitions_match_sfdisk(images: dict[str, Path]) -> None:
    path = images["mbr_logical"]
    oracle = sfdisk_json(path)
    table = read_table(FileSource(str(path)))
    assert (table.kind, table.disk_guid) == ("mbr", oracle["id"])
    got = [(p.index, p.first_lba, p.count_sectors, p.type_id, p.attributes == 0x80)
           for p in table.partitions]
    want = [(int(p["node"].removeprefix(str(path))), p["start"], p["size"],
             f"0x{int(p['type'], 16):02x}", p.get("bootable", False))
            for p in oracle["partitions"]]
    assert got == want
    assert [p.role for p in table.partitions].count("logical") == 3


def test_ebrs_and_gaps_match_mmls(images: dict[str, Path]) -> None:
    rows = mmls(images["mbr_logical"])
    table = read_table(FileSource(str(images["mbr_logical"])))
    tables = [(r["start"], r["length"]) for r in rows if "Table" in r["desc"]]
    assert [(e.start_lba, e.count) for e in table.metadata_extents] == tables
    # mmls' unallocated runs include the table sectors; ours leave them out
    table_lbas = {lba for lba, _ in tables}
    unalloc = [(r["start"] + (r["start"] in table_lbas), r["end"]) for r in rows
               if r["desc"] == "Unallocated"]
    assert list(table.gaps) == unalloc


def test_hybrid_mbr_records_match_mmls(images: dict[str, Path]) -> None:
    rows = [r for r in mmls(images["hybrid"], "-t", "dos") if ":" in r["slot"]]
    mbr = parse_mbr(_sector0(images["hybrid"]))
    used = [r for r in mbr.records if r.is_used]
    assert [(r.start_lba, r.count_sectors) for r in used] == \
        [(r["start"], r["length"]) for r in rows]
    assert [f"(0x{r.type:02x})" for r in used] == [r["desc"].split()[-1] for r in rows]
    assert classify_mbr(mbr) == "hybrid"
    table = read_table(FileSource(str(images["hybrid"])))
    assert (table.kind, table.mbr_kind) == ("gpt", "hybrid")
    assert any("hybrid" in w for w in table.warnings)


def test_protective_mbr_as_spec(images: dict[str, Path]) -> None:
    mbr = parse_mbr(_sector0(images["small"]))
    sectors = images["small"].stat().st_size // 512
    assert classify_mbr(mbr) == "protective"
    rec = mbr.records[0]
    assert (rec.type, rec.start_lba, rec.count_sectors) == (0xEE, 1, sectors - 1)


def _ebr(data: tuple[int, int] | None, link: tuple[int, int] | None, sig: bytes = b"\x55\xaa"
         ) -> bytes:
    """An EBR built by hand (struct, not our builder): data record 0x83, link record 0x05."""
    recs = b""
    for typ, rec in ((0x83, data), (0x05, link)):
        recs += struct.pack("<B3sB3sII", 0, b"\0" * 3, typ, b"\0" * 3, *rec) if rec \
            else bytes(16)
    return bytes(446) + recs + bytes(32) + sig


def test_ebr_chain_relative_offsets() -> None:
    # E0 = 100. Data records count from their own EBR, links from E0 (spec section 1):
    # EBR 100 -> logical 102+10, link 20 -> EBR 120 -> logical 124+8, link 40 -> EBR 140
    # (relative to EBR 120 it would be 160, which holds nothing) -> logical 141+5.
    disk = {100: _ebr((2, 10), (20, 20)), 120: _ebr((4, 8), (40, 10)), 140: _ebr((1, 5), None)}
    chain = walk_ebr_chain(disk.get, 100, 100, 1000)
    assert [(lp.index, lp.first_lba, lp.count_sectors) for lp in chain.logicals] == \
        [(5, 102, 10), (6, 124, 8), (7, 141, 5)]
    assert chain.ebr_lbas == (100, 120, 140) and chain.warnings == ()


def test_ebr_loop_guard() -> None:
    disk = {100: _ebr((2, 5), (10, 10)), 110: _ebr((2, 5), (0, 10))}  # 110 links back to 100
    chain = walk_ebr_chain(disk.get, 100, 50, 1000)
    assert len(chain.logicals) == 2 and "loops back to LBA 100" in chain.warnings[0]


def test_ebr_depth_guard() -> None:
    disk = {100 + 4 * i: _ebr((1, 2), (4 * i + 4, 4)) for i in range(200)}
    chain = walk_ebr_chain(disk.get, 100, 1000, 2000)
    assert len(chain.ebr_lbas) == 100 and "longer than 100" in chain.warnings[0]


def test_ebr_without_signature_stops_chain() -> None:
    disk = {100: _ebr((2, 5), (10, 10)), 110: _ebr((2, 5), None, sig=b"\0\0")}
    chain = walk_ebr_chain(disk.get, 100, 50, 1000)
    assert len(chain.logicals) == 1
    assert "EBR at LBA 110" in chain.warnings[0] and "bad magic" in chain.warnings[0]


def test_unreadable_or_outside_ebr_stops_chain() -> None:
    disk = {100: _ebr((2, 5), (500, 10))}  # link beyond the extended partition
    chain = walk_ebr_chain(disk.get, 100, 50, 1000)
    assert "outside the extended partition" in chain.warnings[0]
    chain = walk_ebr_chain({}.get, 100, 50, 1000)
    assert "unreadable" in chain.warnings[0] and chain.logicals == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2**32), st.integers(0, 2**32))
def test_fuzzed_mbr_and_ebr_input(data: bytes, e0: int, count: int) -> None:
    try:
        parse_mbr(data)
    except FormatError:
        pass
    sector = (data + bytes(512))[:510] + b"\x55\xaa"
    chain = walk_ebr_chain(lambda lba: sector, e0, count, 2**33)  # every LBA holds `sector`
    assert len(chain.ebr_lbas) <= 100


@st.composite
def primary_layouts(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    """Up to 4 non-overlapping (slot, start, count, type) primary records."""
    slots = draw(st.lists(st.integers(1, 4), max_size=4, unique=True))
    out, lba = [], 1
    for slot in sorted(slots):
        lba += draw(st.integers(0, 50))
        count = draw(st.integers(1, 100))
        typ = draw(st.integers(1, 255).filter(lambda t: t not in (0x05, 0x0F, 0x85, 0xEE)))
        out.append((slot, lba, count, typ))
        lba += count
    return out


@settings(max_examples=60, deadline=None)
@given(primary_layouts(), st.integers(0, 2**32 - 1))
def test_generated_mbr_tables_read_back(layout: list[tuple[int, int, int, int]],
                                        sig: int) -> None:
    recs = [bytes(16)] * 4
    for slot, start, count, typ in layout:   # packed by hand (spec section 1), not our builder
        recs[slot - 1] = struct.pack("<B3sB3sII", 0, bytes(3), typ, bytes(3), start, count)
    sector0 = bytes(440) + struct.pack("<I", sig) + bytes(2) + b"".join(recs) + b"\x55\xaa"
    table = read_table(MemorySource(sector0 + bytes(511 * 512)))
    assert (table.kind, table.disk_guid) == ("mbr", f"0x{sig:08x}")
    assert [(p.index, p.first_lba, p.count_sectors, p.type_id) for p in table.partitions] == \
        [(s, a, c, f"0x{t:02x}") for s, a, c, t in layout]
