"""formats.ewf / formats.ewf_header: every schema parses ewfacquire's bytes and builds them back.

Expected values come from ewfacquire's output (generated into tmp_path), from the source bytes
it was given, or from the EWF document's layout written out with struct here.
"""

from __future__ import annotations

import calendar
import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from formats import ewf, ewf_chunk
from formats.errors import BadMagic, ChecksumMismatch, FormatError, InvalidField, Truncated
from formats.ewf_header import (
    HeaderValues,
    build_header,
    build_header2,
    civil_from_epoch,
    parse_date,
    parse_header,
    parse_header2,
)
from tests.ewf_support import SECTOR, ewfacquire, make_source, payload, sections


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(source bytes, ewfacquire's single-segment E01 bytes with MD5 and SHA-1)."""
    tmp = tmp_path_factory.mktemp("ewfref")
    source = make_source(tmp / "src.raw")
    e01 = ewfacquire(tmp / "src.raw", tmp / "ref", "-d", "sha1")
    return source, e01.read_bytes()


def test_file_header_round_trip(reference: tuple[bytes, bytes]) -> None:
    raw = reference[1][:13]
    assert raw == bytes.fromhex("455646090d0aff00 01 0100 0000".replace(" ", ""))
    assert ewf.parse_file_header(raw) == ewf.FileHeader(1)
    assert ewf.build_file_header(ewf.FileHeader(1)) == raw
    assert ewf.FILE_HEADER.sizeof() == len(raw)


def test_file_header_bad_magic() -> None:
    with pytest.raises(BadMagic):
        ewf.parse_file_header(b"LVF\x09\x0d\x0a\xff\x00\x01\x01\x00\x00\x00")
    with pytest.raises(Truncated):
        ewf.parse_file_header(b"EVF\x09")


def test_section_descriptors_round_trip(reference: tuple[bytes, bytes]) -> None:
    data = reference[1]
    walked = sections(data)
    assert [k for k, *_ in walked] == ["header2", "header2", "header", "volume", "sectors",
                                       "table", "table2", "data", "digest", "hash", "done"]
    for kind, off, nxt, size in walked:
        raw = data[off:off + 76]
        desc = ewf.parse_section_descriptor(raw, off)
        assert desc == ewf.SectionDescriptor(kind, nxt, size)
        assert ewf.build_section_descriptor(desc) == raw
    assert ewf.DESCRIPTOR.sizeof() == 76


def test_section_descriptor_checksum_is_checked(reference: tuple[bytes, bytes]) -> None:
    raw = bytearray(reference[1][13:13 + 76])
    raw[20] ^= 1
    with pytest.raises(ChecksumMismatch):
        ewf.parse_section_descriptor(bytes(raw), 13)


def test_volume_and_data_round_trip(reference: tuple[bytes, bytes]) -> None:
    source, data = reference
    raw = payload(data, "volume")
    vol = ewf.parse_volume(raw)
    sectors = len(source) // SECTOR
    assert (vol.chunk_count, vol.sectors_per_chunk, vol.bytes_per_sector, vol.sector_count) == \
        (-(-sectors // 64), 64, 512, sectors)
    assert (vol.media_type, vol.media_flags, vol.compression_level) == (1, 3, 1)
    assert ewf.build_volume(vol) == raw and len(raw) == ewf.VOLUME.sizeof() == 1052
    assert payload(data, "data") == raw


def test_volume_inconsistent_chunk_count(reference: tuple[bytes, bytes]) -> None:
    raw = bytearray(payload(reference[1], "volume"))
    raw[4] += 1
    raw[1048:1052] = struct.pack("<I", zlib.adler32(bytes(raw[:1048])))
    with pytest.raises(InvalidField):
        ewf.parse_volume(bytes(raw))


def test_table_round_trip(reference: tuple[bytes, bytes]) -> None:
    source, data = reference
    raw = payload(data, "table")
    table = ewf.parse_table(raw)
    sectors_at = next(off for k, off, *_ in sections(data) if k == "sectors")
    assert table.base_offset == sectors_at
    assert len(table.entries) == -(-len(source) // (64 * SECTOR))
    assert table.entries[0] & ewf.OFFSET_MASK == 76     # first chunk right after the descriptor
    assert ewf.build_table(table) == raw == payload(data, "table2")
    assert ewf.TABLE_HEADER.sizeof() == 24


def test_table_entry_checksum_is_checked(reference: tuple[bytes, bytes]) -> None:
    raw = bytearray(payload(reference[1], "table"))
    raw[30] ^= 0x10
    with pytest.raises(ChecksumMismatch):
        ewf.parse_table(bytes(raw))
    with pytest.raises(Truncated):
        ewf.parse_table(bytes(raw[:40]))


def test_hash_and_digest_hold_the_source_hashes(reference: tuple[bytes, bytes]) -> None:
    source, data = reference
    raw_hash, raw_digest = payload(data, "hash"), payload(data, "digest")
    parsed = ewf.parse_hash(raw_hash)
    assert parsed.md5 == hashlib.md5(source).digest()
    assert ewf.build_hash(parsed) == raw_hash and ewf.HASH.sizeof() == len(raw_hash) == 36
    digest = ewf.parse_digest(raw_digest)
    assert digest == ewf.Digest(hashlib.md5(source).digest(), hashlib.sha1(source).digest())
    assert ewf.build_digest(digest) == raw_digest and ewf.DIGEST.sizeof() == 80


def test_error2_round_trip_against_the_documented_layout() -> None:
    entries = ((1000, 200), (4096, 8))
    array = b"".join(struct.pack("<II", *e) for e in entries)
    header = struct.pack("<I", 2) + bytes(512)
    raw = header + struct.pack("<I", zlib.adler32(header)) + array + \
        struct.pack("<I", zlib.adler32(array))
    assert ewf.parse_error2(raw) == ewf.Error2(entries)
    assert ewf.build_error2(ewf.Error2(entries)) == raw
    assert ewf.ERROR2_HEADER.sizeof() == 520
    with pytest.raises(ChecksumMismatch):
        ewf.parse_error2(raw[:-1] + bytes([raw[-1] ^ 1]))


def test_header2_and_header_text(reference: tuple[bytes, bytes]) -> None:
    data = reference[1]
    h2 = parse_header2(payload(data, "header2"))
    h1 = parse_header(payload(data, "header"))
    for values in (h2, h1):
        assert (values.case_number, values.evidence_number, values.description,
                values.examiner, values.notes) == ("CASE-7", "EV-1", "ref disk", "Examiner X",
                                                   "made by ewfacquire")
    assert h1.acquired == h2.acquired                     # "Y M D h m s" vs epoch, same time
    text2 = zlib.decompress(payload(data, "header2"))
    assert text2[:2] == b"\xff\xfe"
    assert zlib.decompress(build_header2(h2)) == text2    # byte-identical layout
    assert zlib.decompress(build_header(h1)) == zlib.decompress(payload(data, "header"))


def test_header_values_are_sanitised() -> None:
    values = HeaderValues(case_number="a\tb", notes="line1\nline2", acquired=0, system=0)
    parsed = parse_header2(build_header2(values))
    assert (parsed.case_number, parsed.notes) == ("a b", "line1 line2")
    assert parse_header(build_header(HeaderValues(examiner="Zoë"))).examiner == "Zo?"


@pytest.mark.parametrize("stamp", [0, 951782400, 1795625185, 4102444799])
def test_dates_match_calendar(stamp: int) -> None:
    parts = civil_from_epoch(stamp)
    assert calendar.timegm((*parts, 0, 0, 0)) == stamp
    assert parse_date(" ".join(map(str, parts))) == stamp


def test_compressed_chunk_from_ewfacquire_decodes(reference: tuple[bytes, bytes]) -> None:
    source, data = reference
    table = ewf.parse_table(payload(data, "table"))
    chunk_bytes = 64 * SECTOR
    for index in (0, len(table.entries) // 3, len(table.entries) // 2):
        entry, nxt = table.entries[index], table.entries[index + 1]
        stored = data[table.base_offset + (entry & ewf.OFFSET_MASK):
                      table.base_offset + (nxt & ewf.OFFSET_MASK)]
        want = source[index * chunk_bytes:(index + 1) * chunk_bytes]
        got, check = ewf_chunk.decode_chunk(stored, bool(entry & ewf.COMPRESSED_FLAG), chunk_bytes)
        assert got == want and check == zlib.adler32(want)


def test_chunk_codec() -> None:
    random_chunk = bytes(range(256)) * 8 + hashlib.sha512(b"x").digest() * 480
    stored, compressed = ewf_chunk.encode_chunk(random_chunk, ewf.LEVEL_NONE)
    assert not compressed and stored == random_chunk + struct.pack("<I", zlib.adler32(random_chunk))
    zero = bytes(32768)
    stored, compressed = ewf_chunk.encode_chunk(zero, ewf.LEVEL_NONE)   # empty-block optimisation
    assert compressed and zlib.decompress(stored) == zero and len(stored) < 100
    stored, compressed = ewf_chunk.encode_chunk(b"\xab" * 32768, ewf.LEVEL_FAST)
    assert stored is ewf_chunk.encode_chunk(b"\xab" * 32768, ewf.LEVEL_BEST)[0]   # reused
    bad = bytearray(ewf_chunk.encode_chunk(random_chunk, ewf.LEVEL_NONE)[0])
    bad[5] ^= 1
    with pytest.raises(ChecksumMismatch):
        ewf_chunk.decode_chunk(bytes(bad), False, len(random_chunk))
    packed = bytearray(zlib.compress(b"text " * 1000))
    packed[-1] ^= 1
    with pytest.raises(ChecksumMismatch):
        ewf_chunk.decode_chunk(bytes(packed), True, 5000)
    with pytest.raises(InvalidField):     # a zlib bomb is cut at the chunk size
        ewf_chunk.decode_chunk(zlib.compress(bytes(1 << 20)), True, 32768)


def test_segment_names_follow_the_document() -> None:
    names = [ewf.segment_extension(n) for n in (1, 2, 99, 100, 101, 125, 126, 775, 776)]
    assert names == ["E01", "E02", "E99", "EAA", "EAB", "EAZ", "EBA", "EZZ", "FAA"]
    assert ewf.segment_extension(100 + 22 * 676 - 1) == "ZZZ"
    with pytest.raises(InvalidField):
        ewf.segment_extension(100 + 22 * 676)
    assert all(ewf.segment_number(ewf.segment_extension(n)) == n for n in range(1, 2000))
    for name in ("ABC", "DZZ", "E00", "E1", "E0x"):
        with pytest.raises(FormatError):
            ewf.segment_number(name)


def test_volume_round_trip_of_built_values(tmp_path: Path) -> None:
    vol = ewf.Volume(chunk_count=3, sectors_per_chunk=64, bytes_per_sector=4096,
                     sector_count=130, set_guid=bytes(range(16)))
    raw = ewf.build_volume(vol)
    assert ewf.parse_volume(raw) == vol and len(raw) == 1052
    assert raw[64:80] == bytes(range(16)) and struct.unpack_from("<Q", raw, 16)[0] == 130
