"""Property tests: any image -> write_simg -> SparseReader gives back its bytes and kinds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from formats.extent import Kind
from formats.sparse import parse_sparse
from imager.image.sparse import SparseReader
from imager.image.sparse_export import write_simg
from imager.image.sparse_writer import SimgEncoder, SparseSink
from tests.sparse_support import MemoryReader, expected_expansion

KINDS = [Kind.DATA, Kind.ZERO, Kind.FILL, Kind.UNREAD, Kind.NOT_ACQUIRED]
runs_strategy = st.lists(st.tuples(st.integers(1, 40), st.sampled_from(KINDS),
                                   st.sampled_from([0x00, 0x5A, 0xFF])), min_size=1, max_size=12)


def make_reader(runs: list[tuple[int, Kind, int]], chunk_sectors: int) -> MemoryReader:
    data, out = bytearray(), []
    for count, kind, fill in runs:
        if kind is Kind.DATA:
            data += os.urandom(count * 512)
        elif kind is Kind.FILL:
            data += bytes([fill]) * count * 512
        else:
            data += bytes(count * 512)
        out.append((count, kind, fill if kind is Kind.FILL else None))
    return MemoryReader(bytes(data), out, chunk_sectors=chunk_sectors)


def expected_kinds(source: MemoryReader, blk: int) -> list[Kind]:
    """Per block, from the runs: untouched -> NOT_ACQUIRED, else by content (like img2simg)."""
    spb, kinds_per_sector = blk // 512, []
    for count, kind, _ in source.runs:
        kinds_per_sector += [kind] * count
    content = expected_expansion(source, blk)
    out = []
    for b in range(len(content) // blk):
        if not any(k.was_read for k in kinds_per_sector[b * spb:(b + 1) * spb]):
            out.append(Kind.NOT_ACQUIRED)
            continue
        block = content[b * blk:(b + 1) * blk]
        uniform = block == block[:4] * (blk // 4)
        if uniform and block[:4] == bytes(4):
            out.append(Kind.ZERO)
        elif uniform and block[:4] == block[:1] * 4:
            out.append(Kind.FILL)
        else:
            out.append(Kind.DATA)
    return out


def reader_kinds(reader: SparseReader, blk: int) -> list[Kind]:
    spb, out = blk // 512, []
    for c in reader.chunks():
        assert c.extent.start_lba % spb == 0 and c.extent.count % spb == 0
        out += [c.extent.kind] * (c.extent.count // spb)
    return out


@settings(max_examples=40, deadline=None)
@given(runs=runs_strategy, blk=st.sampled_from([512, 1024, 4096]), crc=st.booleans(),
       chunk_sectors=st.sampled_from([8, 64]))
def test_writer_then_reader_round_trip(runs: list[tuple[int, Kind, int]], blk: int, crc: bool,
                                       chunk_sectors: int) -> None:
    source = make_reader(runs, chunk_sectors)
    with tempfile.TemporaryDirectory() as tmp:
        [path] = write_simg(source, str(Path(tmp) / "o.simg"), block_size=blk, crc=crc)
        reader = SparseReader(path)
        try:
            data = b"".join(reader.read_chunk(c) for c in reader.chunks())  # verifies CRCs
            assert data == expected_expansion(source, blk)
            assert reader_kinds(reader, blk) == expected_kinds(source, blk)
        finally:
            reader.close()


@settings(max_examples=25, deadline=None)
@given(runs=runs_strategy, extra=st.integers(0, 3000), crc=st.booleans())
def test_split_pieces_cover_the_image_once(runs: list[tuple[int, Kind, int]], extra: int,
                                           crc: bool) -> None:
    """Every piece <= max_size and spans the image; DATA of the pieces never overlaps."""
    source = make_reader(runs * 3, 64)
    max_size = 28 + 36 + 1024 + (16 if crc else 0) + extra
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_simg(source, str(Path(tmp) / "o.simg"), block_size=1024, crc=crc,
                           max_size=max_size)
        expected = expected_expansion(source, 1024)
        rebuilt, owner = bytearray(len(expected)), [None] * (len(expected) // 512)
        for p in paths:
            blob = Path(p).read_bytes()
            assert len(blob) <= max_size
            assert parse_sparse(blob)[0].total_blks * 1024 == len(expected)
            reader = SparseReader(p)
            try:
                for c in reader.chunks():
                    if c.extent.kind is Kind.NOT_ACQUIRED:
                        continue
                    for lba in range(c.extent.start_lba, c.extent.end_lba):
                        assert owner[lba] is None
                        owner[lba] = p
                    rebuilt[c.extent.start_lba * 512:c.extent.end_lba * 512] = reader.read_chunk(c)
            finally:
                reader.close()
        assert bytes(rebuilt) == expected


@settings(max_examples=25, deadline=None)
@given(runs=runs_strategy)
def test_sink_matches_export(runs: list[tuple[int, Kind, int]]) -> None:
    """The acquire Sink and write_simg make the same file from the same extents."""
    source = make_reader(runs, 64)
    with tempfile.TemporaryDirectory() as tmp:
        [exported] = write_simg(source, str(Path(tmp) / "e.simg"))
        sink = SparseSink(str(Path(tmp) / "s.simg"), 512, source.sector_count)
        for c in source.chunks():
            sink.write(c.extent, source.read_chunk(c) if c.extent.kind is Kind.DATA else None)
        sink.checkpoint()
        sink.finalize(None)
        assert sink.paths == [str(Path(tmp) / "s.simg")]
        assert Path(exported).read_bytes() == Path(sink.paths[0]).read_bytes()


def test_encoder_refuses_out_of_order_extents(tmp_path: Path) -> None:
    from formats.extent import Extent

    enc = SimgEncoder(str(tmp_path / "x.simg"), sector_size=512, sector_count=64)
    enc.write(Extent(8, 8, Kind.ZERO), None)
    try:
        enc.write(Extent(0, 8, Kind.ZERO), None)
    except ValueError as err:
        assert "out of order" in str(err)
    else:
        raise AssertionError("an extent before the last one was accepted")
    finally:
        enc.abort()
    assert not (tmp_path / "x.simg").exists()
