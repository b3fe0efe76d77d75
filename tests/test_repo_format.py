"""formats/repo.py records, the retention policy and the diff sweep, on constructed inputs."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct

import pytest

from formats.errors import BadMagic, ChecksumMismatch, InvalidField, Truncated
from formats.repo import (
    IndexEntry,
    PackIndex,
    RecordHeader,
    build_index,
    build_pack_header,
    build_record_header,
    build_snapshot,
    parse_index,
    parse_pack_header,
    parse_record_header,
    parse_snapshot,
)

PACK_ID = "00112233445566778899aabbccddeeff"


def test_pack_header_is_the_documented_16_bytes() -> None:
    # docs/REPOSITORY.md: "IMGRPACK", u16 major=1, u16 minor=0, 4 reserved zero bytes
    assert build_pack_header() == b"IMGRPACK\x01\x00\x00\x00\x00\x00\x00\x00"
    assert parse_pack_header(build_pack_header()) == (1, 0)
    with pytest.raises(BadMagic):
        parse_pack_header(b"IMGRPACX" + bytes(8))
    with pytest.raises(InvalidField):
        parse_pack_header(b"IMGRPACK\x02\x00" + bytes(6))


def test_record_header_layout_round_trips() -> None:
    digest = hashlib.sha256(b"chunk").digest()
    raw = build_record_header(RecordHeader(digest, 4096, 100, 1))
    assert raw == b"CHNK" + struct.pack("<III", 1, 4096, 100) + digest
    assert parse_record_header(raw) == RecordHeader(digest, 4096, 100, 1)
    with pytest.raises(Truncated):
        parse_record_header(raw[:47])


def _index() -> PackIndex:
    entries = tuple(IndexEntry(hashlib.sha256(bytes([i])).digest(), 16 + 148 * i, 4096, 100, 1)
                    for i in range(3))
    return PackIndex(PACK_ID, 16 + 148 * 3, entries)


def test_index_round_trips_and_has_the_documented_size() -> None:
    data = build_index(_index())
    assert len(data) == 40 + 3 * 52 + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    assert data[:8] == b"IMGRIDX\0" and data[12:28] == bytes.fromhex(PACK_ID)
    assert parse_index(data) == _index()


@pytest.mark.parametrize("pos", [0, 9, 20, 30, 45, 100, 180, 200, 227])
def test_any_flipped_index_byte_is_refused(pos: int) -> None:
    data = bytearray(build_index(_index()))
    data[pos] ^= 0x01
    with pytest.raises((ChecksumMismatch, BadMagic, InvalidField, Truncated)):
        parse_index(bytes(data))


def test_index_entry_outside_its_pack_is_refused() -> None:
    bad = PackIndex(PACK_ID, 100, _index().entries)
    with pytest.raises(InvalidField):
        parse_index(build_index(bad))


def test_snapshot_document_is_self_checksummed() -> None:
    doc = {"id": "ab12cd34", "ranges": [], "tags": ["x"]}
    data = build_snapshot(doc)
    parsed = parse_snapshot(data)
    assert parsed["id"] == "ab12cd34" and parsed["version"] == "1.0"
    with pytest.raises(ChecksumMismatch):
        parse_snapshot(data.replace(b'"x"', b'"y"'))
    newer = dict(parsed, version="2.0")
    with pytest.raises(InvalidField):
        parse_snapshot(build_snapshot(newer).replace(b'"version":"1.0"', b'"version":"2.0"'))


def _snap(snap_id: str, when: str) -> dict[str, object]:
    t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc).timestamp()
    return {"id": snap_id, "time_unix": t}


def test_retention_keeps_newest_per_day_and_week() -> None:
    from imager.repo.gc import select_keep

    docs = [_snap("mon1", "2026-11-16T08:00"), _snap("mon2", "2026-11-16T20:00"),
            _snap("tue", "2026-11-17T08:00"), _snap("sun", "2026-11-22T08:00"),
            _snap("mon3", "2026-11-23T08:00"), _snap("mon4", "2026-11-23T09:00")]
    assert set(select_keep(docs, last=1)) == {"mon4"}
    assert set(select_keep(docs, daily=3)) == {"mon4", "sun", "tue"}
    # ISO weeks: 2026-W48 holds the 23rd, W47 the 16th..22nd (newest there: sun)
    assert set(select_keep(docs, weekly=2)) == {"mon4", "sun"}
    assert set(select_keep(docs, last=2, weekly=3)) == {"mon4", "mon3", "sun"}
    assert select_keep(docs) == {}


def test_diff_sweep_finds_changed_chunks_and_kinds() -> None:
    from imager.repo.diff import changed_ranges

    def doc(ranges: list[dict[str, object]]) -> dict[str, object]:
        return {"sector_count": 40, "sector_size": 512, "ranges": ranges}

    a = doc([{"lba": 0, "count": 20, "kind": "data", "chunks": [[10, "aa"], [10, "bb"]]},
             {"lba": 20, "count": 20, "kind": "zero"}])
    b = doc([{"lba": 0, "count": 30, "kind": "data",
              "chunks": [[10, "aa"], [10, "cc"], [10, "dd"]]},
             {"lba": 30, "count": 10, "kind": "fill", "fill": 255}])
    assert changed_ranges(a, b) == [(10, 40)]
    assert changed_ranges(a, a) == []
