"""formats.manifest: canonical JSON, self-checksum, strict parsing of hostile input."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.errors import ChecksumMismatch, FormatError
from formats.extent import Extent, Kind
from formats.manifest import KindRun, Manifest, parse_manifest, runs_append

CHECK = "ab" * 32


def sample() -> Manifest:
    return Manifest(
        sector_size=512, sector_count=20000, chunk_sectors=8192,
        chunk_runs=(KindRun(0, 1, Kind.DATA), KindRun(1, 1, Kind.FILL, 0xFF),
                    KindRun(2, 1, Kind.DATA)),
        chunk_checks=(CHECK, "cd" * 32), hashes={"sha256": "00" * 32},
        source={"kind": "file", "path": "/dev/sdz", "serial": "X1"},
        table={"kind": "gpt"}, table_sectors=((0, b"\x55\xaa" * 256),),
        unread=((100, 4),), not_acquired=((16384, 3616),), case={"case": "C-1"},
        options={"level": 3}, timings={"acquire_seconds": 1.5}, started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:01:00Z", command_line=("imager", "acquire"), tool_version="0.1")


def reseal(obj: dict) -> bytes:
    """Recompute the checksum the way the spec in formats/manifest.py defines it (by hand)."""
    obj = {k: v for k, v in obj.items() if k != "checksum"}
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    obj["checksum"] = hashlib.sha256(canon.encode()).hexdigest()
    return json.dumps(obj).encode()


def test_round_trip_and_checksum_definition() -> None:
    m = sample()
    raw = m.to_json()
    assert parse_manifest(raw) == m
    obj = json.loads(raw)
    assert reseal(obj) and parse_manifest(reseal(obj)) == m  # checksum recomputed by hand
    assert obj["version"] == "1.1" and obj["format"] == "imager-manifest"


def test_any_edit_breaks_the_checksum() -> None:
    raw = sample().to_json()
    edited = raw.replace(b'"C-1"', b'"C-2"')
    with pytest.raises(ChecksumMismatch):
        parse_manifest(edited)


def test_chunks_and_sector_map() -> None:
    m = sample()
    chunks = list(m.iter_chunks())
    assert [(i, e.kind, c) for i, e, c in chunks] == [
        (0, Kind.DATA, CHECK), (1, Kind.FILL, None), (2, Kind.DATA, "cd" * 32)]
    assert chunks[2][1].count == 20000 - 16384  # the short last chunk
    assert m.extents() == [Extent(0, 100), Extent(100, 4, Kind.UNREAD), Extent(104, 8088),
                           Extent(8192, 8192, Kind.FILL, 0xFF),
                           Extent(16384, 3616, Kind.NOT_ACQUIRED)]


def test_runs_append_extends_runs() -> None:
    runs: list[KindRun] = []
    for i, (k, f) in enumerate([(Kind.ZERO, None), (Kind.ZERO, None), (Kind.FILL, 1),
                                (Kind.FILL, 2), (Kind.DATA, None)]):
        runs_append(runs, i, k, f)
    assert runs == [KindRun(0, 2, Kind.ZERO), KindRun(2, 1, Kind.FILL, 1),
                    KindRun(3, 1, Kind.FILL, 2), KindRun(4, 1, Kind.DATA)]


@pytest.mark.parametrize("key,value", [
    ("version", "2.0"), ("version", "1"), ("format", "other"), ("sector_size", 500),
    ("sector_size", True), ("sector_count", -1), ("chunk_sectors", 0),
    ("chunk_runs", [[0, 3, "data"]]), ("chunk_runs", [[0, 1, "data"], [2, 2, "zero"]]),
    ("chunk_runs", [[0, 3, "fill"]]), ("chunk_runs", [[0, 3, "bogus"]]),
    ("chunk_checks", ["zz" * 32, CHECK]), ("chunk_checks", [CHECK]),
    ("unread", [[19999, 2]]), ("unread", [[0, 0]]), ("table_sectors", [[0, "***"]]),
    ("hashes", {"sha256": 1}), ("chunk_check", "rot13"), ("command_line", [1]),
    ("timings", {"x": "y"}), ("case", []),
])
def test_strict_parsing(key: str, value: object) -> None:
    obj = json.loads(sample().to_json())
    obj[key] = value
    with pytest.raises(FormatError):
        parse_manifest(reseal(obj))


def test_newer_minor_version_is_accepted() -> None:
    obj = json.loads(sample().to_json())
    obj["version"] = "1.7"
    obj["future_field"] = {"x": 1}
    assert parse_manifest(reseal(obj)).version == (1, 7)


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b"[" * 100000, b"\xff\xfe", b'{"checksum":1}'])
def test_garbage_is_a_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        parse_manifest(raw)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=5), kids, max_size=4), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(json.loads(sample().to_json()))), value=JSON)
def test_hostile_field_values_fail_cleanly(key: str, value: object) -> None:
    """Any JSON value in any field, correctly re-sealed: a Manifest or a FormatError only."""
    obj = json.loads(sample().to_json())
    obj[key] = value
    try:
        parse_manifest(reseal(obj))
    except FormatError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_flipped_bytes_are_caught(data: st.DataObject) -> None:
    raw = bytearray(sample().to_json())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(FormatError):
        parse_manifest(bytes(raw))
