"""EwfSink and EwfReader against libewf's tools (ewfverify, ewfinfo, ewfexport, pyewf).

Expected values: md5 of the source bytes (hashlib over what we fed in), libewf's verdicts and
output, and the bytes ewfacquire/ewfexport produce.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

import pytest

from formats.errors import ChecksumMismatch, FormatError
from formats.extent import Extent, Kind
from imager.devices.base import Identity
from imager.image.ewf import EwfReader, EwfSink, find_segments
from imager.image.open import open_image
from tests.ewf_support import (
    SECTOR,
    ewfacquire,
    ewfexport_raw,
    ewfinfo,
    ewfverify,
    make_source,
    md5,
)

CASE = {"case_number": "2026-0042", "evidence_number": "PHONE-3", "examiner": "J. Doe",
        "description": "Pixel test phone", "notes": "sealed bag 17"}


def write_e01(path: Path, data: bytes, *, step: int = 200, unread: tuple[int, int] | None = None,
              sector_size: int = SECTOR, **kw: object) -> EwfSink:
    """Feed ``data`` to an EwfSink in ``step``-sector extents, classifying like the pipeline."""
    count = len(data) // sector_size
    sink = EwfSink(str(path), sector_size=sector_size, sector_count=count, case=CASE, **kw)
    for lba in range(0, count, step):
        n = min(step, count - lba)
        piece = data[lba * sector_size:(lba + n) * sector_size]
        if unread and unread[0] <= lba < unread[0] + unread[1]:
            sink.write(Extent(lba, n, Kind.UNREAD), None)
        elif piece == bytes(len(piece)):
            sink.write(Extent(lba, n, Kind.ZERO), None)
        elif piece == piece[:1] * len(piece):
            sink.write(Extent(lba, n, Kind.FILL, piece[0]), None)
        else:
            sink.write(Extent(lba, n), piece)
    sink.finalize(None)
    return sink


def test_single_segment_passes_ewfverify_with_source_md5(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.raw")
    sink = write_e01(tmp_path / "case.E01", data)
    assert sink.segments == [str(tmp_path / "case.E01")]
    result = ewfverify(tmp_path / "case.E01")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ewfverify: SUCCESS" in result.stdout
    assert f"MD5 hash calculated over data:\t\t{md5(data)}" in result.stdout
    assert ewfexport_raw(tmp_path / "case.E01", tmp_path / "out") == data


def test_ewfinfo_shows_case_metadata(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.raw", sectors=1000)
    write_e01(tmp_path / "case", data)
    info = ewfinfo(tmp_path / "case.E01")
    for label, value in (("Case number", "2026-0042"), ("Evidence number", "PHONE-3"),
                         ("Examiner name", "J. Doe"), ("Description", "Pixel test phone"),
                         ("Notes", "sealed bag 17"), ("Bytes per sector", "512"),
                         ("Number of sectors", "1000"), ("MD5", md5(data))):
        assert re.search(rf"{label}:\s+{re.escape(value)}\n", info), (label, info)


def test_ewfinfo_shows_device_model_and_serial(tmp_path: Path) -> None:
    identity = Identity(kind="usb-msc", path="usb-msc:18d1:4ee0", size_bytes=64 * SECTOR,
                        sector_size=SECTOR, model="Pixel 7", serial="2A1B3C")
    sink = EwfSink(str(tmp_path / "id"), sector_size=SECTOR, sector_count=64, case=CASE,
                   identity=identity)
    sink.write(Extent(0, 64, Kind.ZERO), None)
    sink.finalize(None)
    info = ewfinfo(tmp_path / "id.E01")
    assert re.search(r"Model:\s+Pixel 7\n", info) and re.search(r"Serial number:\s+2A1B3C\n", info), info


def test_multi_segment_set(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + bytes(1 << 20)
    sink = write_e01(tmp_path / "big", data, step=2048, segment_size=1 << 20)
    names = [os.path.basename(p) for p in sink.segments]
    assert names == ["big.E01", "big.E02", "big.E03", "big.E04"]
    assert all(os.path.getsize(p) <= 1 << 20 for p in sink.segments)
    result = ewfverify(tmp_path / "big.E01")
    assert result.returncode == 0 and md5(data) in result.stdout, result.stdout
    assert ewfexport_raw(tmp_path / "big.E01", tmp_path / "out") == data
    reader = EwfReader(str(tmp_path / "big.E03"))        # any segment opens the set
    assert reader.segments == sink.segments and reader.read(0, reader.sector_count) == data
    assert reader.md5 == md5(data)


def test_pyewf_reads_the_same_bytes(tmp_path: Path) -> None:
    pyewf = pytest.importorskip("pyewf", reason="libewf-python is optional (pip)")
    data = make_source(tmp_path / "src.raw")
    write_e01(tmp_path / "p", data, segment_size=1 << 20)
    handle = pyewf.handle()
    handle.open(pyewf.glob(str(tmp_path / "p.E01")))
    try:
        theirs = handle.read(handle.get_media_size())
        assert handle.get_hash_value("MD5") == md5(data)
    finally:
        handle.close()
    ours = EwfReader(str(tmp_path / "p.E01"))
    assert theirs == ours.read(0, ours.sector_count) == data


def test_unread_sectors_in_error2_and_ewfinfo(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.raw")
    sink = write_e01(tmp_path / "bad", data, unread=(1000, 200))
    stored = data[:1000 * SECTOR] + bytes(200 * SECTOR) + data[1200 * SECTOR:]
    assert sink.unread == [Extent(1000, 200, Kind.UNREAD)]
    info = ewfinfo(tmp_path / "bad.E01")
    assert re.search(r"Read errors during acquiry:?\s+total number: 1\s+"
                     r"at sector\(s\): 1000 - 1199 number: 200", info), info
    assert ewfverify(tmp_path / "bad.E01").returncode == 0
    reader = EwfReader(str(tmp_path / "bad.E01"))
    assert reader.error_ranges == ((1000, 200),)
    assert reader.read(0, reader.sector_count) == stored and reader.md5 == md5(stored)


def test_manifest_ranges_join_error2(tmp_path: Path) -> None:
    class Manifest:   # the fields finalize() reads, as formats.manifest.Manifest has them
        unread = ((10, 3), (12, 4))
        not_acquired = ((100, 50),)
        hashes: ClassVar[dict[str, str]] = {}

    sink = EwfSink(str(tmp_path / "m"), sector_size=SECTOR, sector_count=256, case=CASE)
    sink.write(Extent(0, 256), os.urandom(256 * SECTOR))
    sink.finalize(Manifest())
    assert sink.unread == [Extent(10, 6, Kind.UNREAD)]
    assert sink.not_acquired == [Extent(100, 50, Kind.NOT_ACQUIRED)]
    assert "at sector(s): 10 - 15 number: 6" in ewfinfo(tmp_path / "m.E01")


def test_4096_byte_sectors(tmp_path: Path) -> None:
    data = os.urandom(300 * 4096)
    write_e01(tmp_path / "ufs", data, sector_size=4096, step=77)
    result = ewfverify(tmp_path / "ufs.E01")
    assert result.returncode == 0 and md5(data) in result.stdout
    reader = open_image(str(tmp_path / "ufs.E01"))
    assert (reader.sector_size, reader.sector_count) == (4096, 300)
    assert reader.read(5, 100) == data[5 * 4096:105 * 4096]


@pytest.mark.parametrize("extra", [(), ("-S", "1048576"), ("-c", "none"), ("-b", "128")])
def test_reads_ewfacquire_sets_byte_exact(tmp_path: Path, extra: tuple[str, ...]) -> None:
    data = make_source(tmp_path / "src.raw", sectors=8192)
    e01 = ewfacquire(tmp_path / "src.raw", tmp_path / "theirs", *extra)
    reader = open_image(str(e01))
    assert isinstance(reader, EwfReader)
    assert reader.read(0, reader.sector_count) == data
    assert reader.md5 == md5(data)
    assert reader.header is not None and reader.header.case_number == "CASE-7"
    chunks = list(reader.chunks())
    assert sum(c.extent.count for c in chunks) == reader.sector_count
    assert b"".join(reader.read_chunk(c) for c in chunks) == data
    if extra[:1] == ("-S",):
        assert len(find_segments(str(e01))) == 3


def test_corrupt_chunk_is_detected(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.raw", sectors=2048)
    e01 = ewfacquire(tmp_path / "src.raw", tmp_path / "c")
    raw = bytearray(e01.read_bytes())
    sectors_at = raw.index(b"sectors\0")
    raw[sectors_at + 76 + 1000] ^= 0x40           # inside chunk 0 (random, stored raw)
    e01.write_bytes(bytes(raw))
    assert ewfverify(e01).returncode != 0         # libewf agrees the file is damaged
    reader = EwfReader(str(e01))
    chunks = list(reader.chunks())
    with pytest.raises(ChecksumMismatch):
        reader.read_chunk(chunks[0])
    assert reader.read_chunk(chunks[1]) == data[64 * SECTOR:128 * SECTOR]


def test_damaged_table_falls_back_to_table2(tmp_path: Path) -> None:
    data = make_source(tmp_path / "src.raw", sectors=2048)
    e01 = ewfacquire(tmp_path / "src.raw", tmp_path / "t")
    raw = bytearray(e01.read_bytes())
    table_at = raw.index(b"table\0")
    raw[table_at + 76 + 24 + 4] ^= 0xFF           # an entry of table, not of table2
    e01.write_bytes(bytes(raw))
    assert EwfReader(str(e01)).read(0, 2048) == data


@pytest.mark.parametrize("cut", [5, 13 + 40, 400, -300, -20])
def test_truncated_set_is_a_format_error(tmp_path: Path, cut: int) -> None:
    data = make_source(tmp_path / "src.raw", sectors=2048)
    write_e01(tmp_path / "t", data)
    e01 = tmp_path / "t.E01"
    e01.write_bytes(e01.read_bytes()[:cut])
    with pytest.raises(FormatError):
        EwfReader(str(e01)).read(0, 2048)


def test_missing_segment_is_a_format_error(tmp_path: Path) -> None:
    write_e01(tmp_path / "m", os.urandom(3 << 20), step=4096, segment_size=1 << 20)
    (tmp_path / "m.E02").rename(tmp_path / "elsewhere")
    with pytest.raises(FormatError, match="segment 2 missing"):
        EwfReader(str(tmp_path / "m.E01"))
    (tmp_path / "m.E01").rename(tmp_path / "first")
    with pytest.raises(FormatError, match="m.E01 is missing"):
        EwfReader(str(tmp_path / "m.E03"))


def test_existing_set_is_not_overwritten(tmp_path: Path) -> None:
    write_e01(tmp_path / "x", bytes(64 * SECTOR))
    with pytest.raises(Exception, match="already exists"):
        EwfSink(str(tmp_path / "x.E01"), sector_size=SECTOR, sector_count=64)
