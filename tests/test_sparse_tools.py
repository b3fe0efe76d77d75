"""Interoperability with AOSP libsparse tools (img2simg, simg2img, simg2simg) as oracles."""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from formats.errors import ChecksumMismatch
from formats.extent import Kind
from formats.sparse import CHUNK_CRC32, CHUNK_DONT_CARE, CHUNK_FILL, CHUNK_RAW, parse_sparse
from imager.image.open import open_image
from imager.image.sparse import SparseReader
from imager.image.sparse_export import write_simg
from tests.conftest import need_tool
from tests.sparse_support import MemoryReader, expected_expansion, img2simg, simg2img

BLK = 4096


def read_all(reader: SparseReader) -> bytes:
    return b"".join(reader.read_chunk(c) for c in reader.chunks())


def spec_sample(tmp_path: Path) -> Path:
    """The spec's measured layout: [3 random][4 zero][2 DEADBEEF blocks][1000 random bytes]."""
    raw = tmp_path / "sample.raw"
    raw.write_bytes(os.urandom(3 * BLK) + bytes(4 * BLK) + bytes.fromhex("deadbeef") * 2048
                    + os.urandom(1000))
    return raw


def test_img2simg_layout_as_the_spec_measured(tmp_path: Path) -> None:
    raw = spec_sample(tmp_path)
    header, chunks = parse_sparse(img2simg(raw, tmp_path / "s.simg").read_bytes())
    assert (header.total_blks, header.total_chunks, header.image_checksum) == (10, 4, 0)
    assert [(c.chunk_type, c.block_count, c.data_size + 12) for c in chunks] == [
        (CHUNK_RAW, 3, 12300), (CHUNK_FILL, 4, 16), (CHUNK_FILL, 2, 16), (CHUNK_RAW, 1, 4108)]
    assert chunks[2].value == bytes.fromhex("deadbeef")   # stored as the data's byte order


def test_img2simg_output_reads_back_as_the_original(tmp_path: Path) -> None:
    raw = spec_sample(tmp_path)
    reader = open_image(str(img2simg(raw, tmp_path / "s.simg")))
    try:
        assert isinstance(reader, SparseReader)
        original = raw.read_bytes()
        data = read_all(reader)
        assert data == original + bytes(10 * BLK - len(original))
        assert reader.sector_count == 80
        kinds = [(c.extent.start_lba, c.extent.count, c.extent.kind) for c in reader.chunks()]
        # zero FILL -> ZERO; a DEADBEEF FILL is not one repeated byte -> synthesised DATA
        assert kinds == [(0, 24, Kind.DATA), (24, 32, Kind.ZERO), (56, 24, Kind.DATA)]
        assert reader.read(3, 50) == original[3 * 512:53 * 512]   # random access across chunks
    finally:
        reader.close()


def holey_raw(path: Path) -> bytes:
    """A file with holes (truncate + dd), an unaligned tail and a one-byte-pattern region."""
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", str(300 * BLK + 777), str(path)], check=True)
    for block, size in ((0, 5), (17, 1), (100, 40), (299, 1)):
        subprocess.run(["dd", "if=/dev/urandom", f"of={path}", f"bs={BLK}", f"seek={block}",
                        f"count={size}", "conv=notrunc", "status=none"], check=True)
    with open(path, "r+b") as f:
        f.seek(200 * BLK)
        f.write(b"\x5a" * (3 * BLK))
    return path.read_bytes()


@pytest.mark.parametrize("block_size", [None, 1024])
def test_img2simg_of_a_file_with_holes_reads_back(tmp_path: Path, block_size: int | None) -> None:
    """img2simg 29.0.6 has no -s: holes become zero FILL chunks (ZERO extents)."""
    original = holey_raw(tmp_path / "holes.raw")
    simg = img2simg(tmp_path / "holes.raw", tmp_path / "h.simg", block_size)
    reader = SparseReader(str(simg))
    try:
        blk = block_size or BLK
        assert read_all(reader) == original + bytes(-len(original) % blk)
        fills = {c.extent.fill for c in reader.chunks() if c.extent.kind is Kind.FILL}
        assert fills == {0x5A}
        assert any(c.extent.kind is Kind.ZERO for c in reader.chunks())
    finally:
        reader.close()


def test_simg2simg_pieces_have_dont_care_and_rebuild(tmp_path: Path) -> None:
    """DONT_CARE made by libsparse's resparse reads as NOT_ACQUIRED; pieces rebuild the image."""
    need_tool("simg2simg")
    original = holey_raw(tmp_path / "holes.raw")
    simg = img2simg(tmp_path / "holes.raw", tmp_path / "h.simg")
    subprocess.run(["simg2simg", str(simg), str(tmp_path / "p.simg"), "100000"], check=True,
                   capture_output=True)
    pieces = sorted(tmp_path.glob("p.simg.*"), key=lambda p: int(p.suffix[1:]))
    assert len(pieces) >= 2
    rebuilt = bytearray(len(original) + (-len(original) % BLK))
    for piece in pieces:
        reader = SparseReader(str(piece))
        try:
            kinds = {c.extent.kind for c in reader.chunks()}
            assert Kind.NOT_ACQUIRED in kinds
            for c in reader.chunks():
                if c.extent.kind is not Kind.NOT_ACQUIRED:
                    rebuilt[c.extent.start_lba * 512:c.extent.end_lba * 512] = reader.read_chunk(c)
        finally:
            reader.close()
    assert bytes(rebuilt[:len(original)]) == original


def runs_image() -> MemoryReader:
    """Every kind, block-aligned and not, with data made from the runs themselves."""
    runs = [(24, Kind.DATA, None), (40, Kind.ZERO, None), (16, Kind.FILL, 0xAB),
            (3, Kind.DATA, None), (13, Kind.NOT_ACQUIRED, None), (100, Kind.DATA, None),
            (64, Kind.UNREAD, None), (16, Kind.DATA, None), (7, Kind.ZERO, None)]
    data = bytearray()
    for count, kind, fill in runs:
        data += os.urandom(count * 512) if kind is Kind.DATA else bytes([fill or 0]) * count * 512
    return MemoryReader(bytes(data), runs)


@pytest.mark.parametrize("crc", [False, True])
def test_our_simg_expands_with_simg2img_to_the_source(tmp_path: Path, crc: bool) -> None:
    source = runs_image()
    paths = write_simg(source, str(tmp_path / "o.simg"), crc=crc)
    assert paths == [str(tmp_path / "o.simg")]
    out = simg2img(paths, tmp_path / "o.raw")
    assert out == expected_expansion(source)
    _, chunks = parse_sparse(Path(paths[0]).read_bytes())
    types = [c.chunk_type for c in chunks]
    assert CHUNK_DONT_CARE in types and CHUNK_FILL in types and CHUNK_RAW in types
    if crc:   # the CRC32 chunk covers the expanded stream (checked with zlib, not our code)
        assert types[-1] == CHUNK_CRC32 and chunks[-1].crc == zlib.crc32(out)


def test_our_reader_verifies_crc_chunks(tmp_path: Path) -> None:
    path = tmp_path / "o.simg"
    write_simg(runs_image(), str(path), crc=True)
    reader = SparseReader(str(path))
    try:
        assert reader.has_crc and read_all(reader)   # in-order pass verifies: no error
    finally:
        reader.close()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01                                  # the stored CRC value
    path.write_bytes(bytes(blob))
    reader = SparseReader(str(path))
    try:
        with pytest.raises(ChecksumMismatch, match="sparse CRC32"):
            read_all(reader)
    finally:
        reader.close()


@pytest.mark.parametrize("max_size", [40_000, 100_000])
def test_split_pieces_each_flash_and_together_rebuild(tmp_path: Path, max_size: int) -> None:
    source = runs_image()
    big = MemoryReader(source.data * 4, source.runs * 4)
    paths = write_simg(big, str(tmp_path / "sys.simg"), max_size=max_size, crc=True)
    assert len(paths) > 2 and paths[0] == str(tmp_path / "sys.0.simg")
    total = None
    for i, p in enumerate(paths):
        blob = Path(p).read_bytes()
        assert len(blob) <= max_size
        header, chunks = parse_sparse(blob)
        assert total in (None, header.total_blks)      # every piece spans the whole image
        total = header.total_blks
        alone = simg2img([p], tmp_path / f"piece{i}.raw")  # each piece is valid on its own
        assert len(alone) == total * BLK and chunks[-1].crc == zlib.crc32(alone)
    assert simg2img(paths, tmp_path / "all.raw") == expected_expansion(big)


def test_pieces_are_at_least_seven_eighths_full(tmp_path: Path) -> None:
    """libsparse's resparse rule: split a chunk when more than 1/8 of the budget is left."""
    data = os.urandom(2000 * 512)
    paths = write_simg(MemoryReader(data, [(2000, Kind.DATA, None)]), str(tmp_path / "r.simg"),
                       max_size=64 * 1024)
    sizes = [Path(p).stat().st_size for p in paths]
    assert all(s >= 64 * 1024 * 7 // 8 for s in sizes[:-1]) and max(sizes) <= 64 * 1024
    assert simg2img(paths, tmp_path / "r.raw") == data + bytes(-len(data) % BLK)


def test_export_of_an_img2simg_image_round_trips(tmp_path: Path) -> None:
    """simg -> our reader -> our writer -> simg2img equals the raw file img2simg started from."""
    original = holey_raw(tmp_path / "holes.raw")
    reader = SparseReader(str(img2simg(tmp_path / "holes.raw", tmp_path / "h.simg")))
    try:
        paths = write_simg(reader, str(tmp_path / "again.simg"), block_size=1024)
    finally:
        reader.close()
    out = simg2img(paths, tmp_path / "again.raw")
    assert out[:len(original)] == original and not any(out[len(original):])


class MappedReader(MemoryReader):
    """DATA chunks whose sector map (``extents()``, as native images have) marks some UNREAD."""

    def __init__(self, data: bytes, unread: list[tuple[int, int]]) -> None:
        super().__init__(data, [(len(data) // 512, Kind.DATA, None)])
        self.unread = unread

    def extents(self) -> list:
        from formats.extent import Extent

        out, pos = [], 0
        for start, count in self.unread:
            out += [Extent(pos, start - pos), Extent(start, count, Kind.UNREAD)]
            pos = start + count
        return out + [Extent(pos, self.sector_count - pos)]


def test_unread_sectors_inside_data_chunks_become_dont_care(tmp_path: Path) -> None:
    data = os.urandom(256 * 512)
    reader = MappedReader(data, [(16, 16), (100, 3)])   # blocks 2..3 whole; 100..102 partial
    [path] = write_simg(reader, str(tmp_path / "u.simg"))
    records = parse_sparse(Path(path).read_bytes())[1]
    assert [(c.start_block, c.block_count) for c in records
            if c.chunk_type == CHUNK_DONT_CARE] == [(2, 2)]
    out = simg2img([path], tmp_path / "u.raw")
    expected = bytearray(data)
    expected[16 * 512:32 * 512] = bytes(16 * 512)
    expected[100 * 512:103 * 512] = bytes(3 * 512)   # inside a block with data: zeros
    assert out == bytes(expected)
