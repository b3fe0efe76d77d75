"""Hostile sparse files: clean FormatError/BadInput, memory bounded by the real file, not claims."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.errors import FormatError, InvalidField, Truncated
from formats.extent import Kind
from imager.errors import BadInput
from imager.image.sparse import SparseReader


def header(blk: int, total_blks: int, chunks: int) -> bytes:
    return struct.pack("<IHHHHIIII", 0xED26FF3A, 1, 0, 28, 12, blk, total_blks, chunks, 0)


def chunk(ctype: int, blocks: int, total: int) -> bytes:
    return struct.pack("<HHII", ctype, 0, blocks, total)


def open_peak(path: Path) -> tuple[SparseReader, int]:
    tracemalloc.start()
    try:
        reader = SparseReader(str(path))
        return reader, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_claimed_image_in_a_tiny_file_opens_small(tmp_path: Path) -> None:
    """4 Gi blocks of DONT_CARE (16 TiB claimed) in 40 bytes: valid, cheap, reads as zeros."""
    path = tmp_path / "huge.simg"
    path.write_bytes(header(4096, 0xFFFFFFFF, 1) + chunk(0xCAC3, 0xFFFFFFFF, 12))
    reader, peak = open_peak(path)
    try:
        assert peak < 1 << 20
        assert reader.sector_count == 0xFFFFFFFF * 8
        assert reader.read(reader.sector_count - 8, 8) == bytes(4096)
        first = next(iter(reader.chunks()))
        assert first.extent.kind is Kind.NOT_ACQUIRED
        assert first.extent.count == reader.chunk_sectors   # pieces stay bounded
    finally:
        reader.close()


def test_many_chunks_keep_a_small_index(tmp_path: Path) -> None:
    """200k alternating FILL chunks: the index is a fraction of the file, reads still right."""
    n = 200_000
    body = b"".join(chunk(0xCAC2, 1, 16) + bytes([i % 2 + 1]) * 4 for i in range(n))
    path = tmp_path / "many.simg"
    path.write_bytes(header(4096, n, n) + body)
    reader, peak = open_peak(path)
    try:
        assert peak < len(body) // 8
        assert reader.read(8 * 123_457, 8) == b"\x02" * 4096
        assert reader.read(8 * 199_998, 16) == b"\x01" * 4096 + b"\x02" * 4096
    finally:
        reader.close()


@pytest.mark.parametrize(("blob", "error", "text"), [
    (header(0, 1, 1) + chunk(0xCAC3, 1, 12), InvalidField, "blk_sz"),
    (header(4096, 5, 1) + chunk(0xCAC3, 4, 12), InvalidField, "total_blks"),
    (header(4096, 3, 1) + chunk(0xCAC3, 4, 12), InvalidField, "overrun"),
    (header(4096, 2, 1) + chunk(0xCAC1, 2, 12 + 8192) + bytes(4096), Truncated, "chunk 0"),
    (header(4096, 2, 1) + chunk(0xCAC1, 2, 12 + 4096) + bytes(4096), InvalidField, "total_sz"),
    (header(4096, 0xFFFFFFFF, 0xFFFFFFFF) + chunk(0xCAC3, 1, 12), Truncated, "chunks"),
    (header(4096, 1, 1) + chunk(0xCAC1, 0xFFFFFFFF, 0xFFFFFFFF), InvalidField, "total_sz"),
    (header(4096, 1, 1)[:20], Truncated, "header"),
])
def test_hostile_files_give_clean_errors(tmp_path: Path, blob: bytes, error: type,
                                         text: str) -> None:
    path = tmp_path / "bad.simg"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        with pytest.raises(error, match=text):
            SparseReader(str(path))
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_block_size_not_a_multiple_of_the_sector_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.simg"
    path.write_bytes(header(1028, 1, 1) + chunk(0xCAC3, 1, 12))
    with pytest.raises(BadInput, match="1028"):
        SparseReader(str(path))


def valid_sample() -> bytes:
    return (header(1024, 6, 5) + chunk(0xCAC1, 2, 12 + 2048) + bytes(range(256)) * 8
            + chunk(0xCAC2, 1, 16) + b"\x07\x07\x07\x07" + chunk(0xCAC3, 2, 12)
            + chunk(0xCAC2, 1, 16) + b"abcd" + chunk(0xCAC4, 0, 16) + bytes(4))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(valid_sample()) - 1), st.integers(0, 255)),
                      min_size=1, max_size=4),
       cut=st.integers(0, len(valid_sample())))
def test_mutated_files_fail_cleanly_or_read(tmp_path: Path, edits: list[tuple[int, int]],
                                           cut: int) -> None:
    blob = bytearray(valid_sample())
    for offset, value in edits:
        blob[offset] = value
    path = tmp_path / "fuzz.simg"
    path.write_bytes(bytes(blob[:cut]))
    try:
        reader = SparseReader(str(path))
    except (FormatError, BadInput):
        return
    try:
        for c in reader.chunks():
            assert len(reader.read_chunk(c)) == c.extent.count * 512
    except FormatError:   # a CRC32 chunk that no longer matches
        pass
    finally:
        reader.close()


@pytest.mark.parametrize("good", [True, False])
def test_header_image_checksum_is_checked_on_a_full_read(tmp_path: Path, good: bool) -> None:
    """A non-zero image_checksum (libsparse writes 0) is the CRC32 of the expanded image."""
    import zlib

    from formats.errors import ChecksumMismatch

    payload = bytes(range(256)) * 4
    expanded = payload + b"\x07" * 1024 + bytes(1024)
    crc = zlib.crc32(expanded) ^ (0 if good else 1)
    blob = struct.pack("<IHHHHIIII", 0xED26FF3A, 1, 0, 28, 12, 1024, 3, 3, crc) \
        + chunk(0xCAC1, 1, 12 + 1024) + payload + chunk(0xCAC2, 1, 16) + b"\x07" * 4 \
        + chunk(0xCAC3, 1, 12)
    path = tmp_path / "sum.simg"
    path.write_bytes(blob)
    reader = SparseReader(str(path))
    try:
        if good:
            assert b"".join(reader.read_chunk(c) for c in reader.chunks()) == expanded
        else:
            with pytest.raises(ChecksumMismatch):
                for c in reader.chunks():
                    reader.read_chunk(c)
    finally:
        reader.close()
