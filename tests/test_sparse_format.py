"""formats/sparse.py: schemas (round trips), validation and the CRC helpers.

Expected bytes are packed here with ``struct`` from the spec's field table
(specs/android-sparse.md), and checked against img2simg output in test_sparse_tools.py.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.errors import BadMagic, ChecksumMismatch, FormatError, InvalidField, Truncated
from formats.sparse import (
    CHUNK_CRC32,
    CHUNK_DONT_CARE,
    CHUNK_FILL,
    CHUNK_HEADER,
    CHUNK_RAW,
    SPARSE_HEADER,
    ChunkHeader,
    SparseHeader,
    build_chunk_header,
    build_sparse_header,
    check_crc,
    crc32_combine,
    crc32_repeat,
    parse_chunk_header,
    parse_sparse,
    parse_sparse_header,
)

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)


def spec_header(blk: int = 4096, total_blks: int = 10, chunks: int = 4, csum: int = 0,
                major: int = 1, minor: int = 0, fhs: int = 28, chs: int = 12) -> bytes:
    return struct.pack("<IHHHHIIII", 0xED26FF3A, major, minor, fhs, chs, blk, total_blks,
                       chunks, csum)


def spec_chunk(ctype: int, blocks: int, total: int) -> bytes:
    return struct.pack("<HHII", ctype, 0, blocks, total)


def test_header_schema_round_trip_against_spec_bytes() -> None:
    raw = spec_header(4096, 10, 4)
    assert raw[:4] == b"\x3a\xff\x26\xed"
    value = SparseHeader(blk_sz=4096, total_blks=10, total_chunks=4)
    assert parse_sparse_header(raw) == value
    assert build_sparse_header(value) == raw
    assert SPARSE_HEADER.sizeof() == len(raw) == 28


def test_chunk_schema_round_trip_against_spec_bytes() -> None:
    raw = spec_chunk(0xCAC1, 3, 12300)
    value = ChunkHeader(CHUNK_RAW, 3, 12300)
    assert parse_chunk_header(raw) == value
    assert build_chunk_header(value) == raw
    assert CHUNK_HEADER.sizeof() == len(raw) == 12


@given(blk=st.integers(1, 0x3FFFFFFF).map(lambda n: 4 * n), total=st.integers(1, 0xFFFFFFFF),
       chunks=u32, csum=u32, minor=u16, fhs=st.integers(28, 64), chs=st.integers(12, 64))
def test_header_round_trip(blk: int, total: int, chunks: int, csum: int, minor: int, fhs: int,
                           chs: int) -> None:
    value = SparseHeader(blk, total, chunks, csum, 1, minor, fhs, chs)
    raw = build_sparse_header(value)
    assert len(raw) == fhs
    assert raw[:28] == spec_header(blk, total, chunks, csum, 1, minor, fhs, chs)
    assert parse_sparse_header(raw) == value


@given(ctype=u16, blocks=u32, total=u32, reserved=u16)
def test_chunk_header_round_trip(ctype: int, blocks: int, total: int, reserved: int) -> None:
    value = ChunkHeader(ctype, blocks, total, reserved)
    raw = build_chunk_header(value)
    assert raw == struct.pack("<HHII", ctype, reserved, blocks, total)
    assert parse_chunk_header(raw) == value


@pytest.mark.parametrize(("raw", "error", "field"), [
    (spec_header()[:27], Truncated, None),
    (b"\x3a\xff\x26\xee" + spec_header()[4:], BadMagic, None),
    (spec_header(major=2), InvalidField, "major_version"),
    (spec_header(fhs=27), InvalidField, "file_hdr_sz"),
    (spec_header(chs=11), InvalidField, "chunk_hdr_sz"),
    (spec_header(blk=0), InvalidField, "blk_sz"),
    (spec_header(blk=4098), InvalidField, "blk_sz"),
    (spec_header(total_blks=0), InvalidField, "total_blks"),
])
def test_header_validation(raw: bytes, error: type, field: str | None) -> None:
    with pytest.raises(error) as info:
        parse_sparse_header(raw)
    if field:
        assert info.value.field == field


def test_minor_version_and_larger_headers_are_accepted() -> None:
    """Spec: higher minors accepted; extra header bytes skipped (file and chunk headers)."""
    head = spec_header(blk=1024, total_blks=2, chunks=2, minor=7, fhs=32, chs=16)
    body = (spec_chunk(0xCAC2, 1, 16 + 4) + b"XXXX" + b"\x01\x02\x03\x04"
            + spec_chunk(0xCAC1, 1, 16 + 1024) + b"YYYY" + b"r" * 1024)
    header, chunks = parse_sparse(head + b"ZZZZ" + body)
    assert header.minor_version == 7
    assert [(c.chunk_type, c.start_block, c.block_count) for c in chunks] == [
        (CHUNK_FILL, 0, 1), (CHUNK_RAW, 1, 1)]
    assert chunks[0].value == b"\x01\x02\x03\x04"
    assert chunks[1].data_offset == 32 + 20 + 16 and chunks[1].data_size == 1024


def image(*chunks: bytes, blk: int = 1024, total_blks: int, count: int | None = None) -> bytes:
    return spec_header(blk, total_blks, len(chunks) if count is None else count) + b"".join(chunks)


@pytest.mark.parametrize(("data", "error", "text"), [
    # RAW whose total_sz disagrees with chunk_sz
    (image(spec_chunk(0xCAC1, 2, 12 + 1024) + bytes(1024), total_blks=2), InvalidField,
     "total_sz"),
    # FILL with an 8-byte payload
    (image(spec_chunk(0xCAC2, 1, 20) + bytes(8), total_blks=1), InvalidField, "total_sz"),
    # DONT_CARE carrying a payload
    (image(spec_chunk(0xCAC3, 1, 16) + bytes(4), total_blks=1), InvalidField, "total_sz"),
    # CRC32 covering blocks
    (image(spec_chunk(0xCAC3, 1, 12), spec_chunk(0xCAC4, 1, 16) + bytes(4), total_blks=2),
     InvalidField, "CRC32"),
    # unknown chunk type
    (image(spec_chunk(0xCAC5, 1, 12), total_blks=1), InvalidField, "unknown chunk type"),
    # chunks overrun total_blks
    (image(spec_chunk(0xCAC3, 5, 12), total_blks=4), InvalidField, "overrun"),
    # chunks cover fewer blocks than total_blks
    (image(spec_chunk(0xCAC3, 3, 12), total_blks=4), InvalidField, "cover 3 blocks"),
    # RAW payload runs past the end of the file (chunk size lies)
    (image(spec_chunk(0xCAC1, 2, 12 + 2048) + bytes(1000), total_blks=2), Truncated, "chunk 0"),
    # more chunks announced than present
    (image(spec_chunk(0xCAC3, 1, 12), total_blks=1, count=2), Truncated, "2 chunks"),
    # a huge chunk count in a tiny file
    (image(spec_chunk(0xCAC3, 1, 12), total_blks=1, count=0xFFFFFFFF), Truncated, "chunks"),
])
def test_chunk_validation(data: bytes, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        parse_sparse(data)


def test_every_truncation_of_a_valid_file_is_a_format_error() -> None:
    data = image(spec_chunk(0xCAC1, 1, 12 + 1024) + b"a" * 1024, spec_chunk(0xCAC2, 2, 16)
                 + b"abcd", spec_chunk(0xCAC3, 1, 12), spec_chunk(0xCAC4, 0, 16) + bytes(4),
                 total_blks=4)
    parse_sparse(data)
    for n in range(len(data)):
        with pytest.raises(FormatError):
            parse_sparse(data[:n])


def test_check_crc_names_both_values() -> None:
    _, chunks = parse_sparse(image(spec_chunk(0xCAC3, 1, 12), spec_chunk(0xCAC4, 0, 16)
                                   + (0x12345678).to_bytes(4, "little"), total_blks=1))
    crc_chunk = chunks[1]
    assert crc_chunk.chunk_type == CHUNK_CRC32 and chunks[0].chunk_type == CHUNK_DONT_CARE
    running = zlib.crc32(bytes(1024))
    with pytest.raises(ChecksumMismatch, match="0x12345678") as info:
        check_crc(crc_chunk, running)
    assert info.value.actual == running and info.value.chunk == 1


@settings(max_examples=60)
@given(a=st.binary(max_size=64), b=st.binary(max_size=64))
def test_crc32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@settings(max_examples=60)
@given(seed=u32, unit=st.binary(min_size=1, max_size=16), count=st.integers(0, 300))
def test_crc32_repeat_matches_zlib(seed: int, unit: bytes, count: int) -> None:
    assert crc32_repeat(seed, unit, count) == zlib.crc32(unit * count, seed)
