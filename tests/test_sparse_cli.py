"""The CLI with sparse images: export --to simg, acquire --format simg, show/verify/restore."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from formats.sparse import CHUNK_DONT_CARE, CHUNK_RAW, parse_sparse
from imager.cli import main
from tests.conftest import need_tool
from tests.sparse_support import img2simg, simg2img

MIB = 1 << 20


def disk(path: Path) -> bytes:
    """A 16 MiB GPT disk (sgdisk) with random data in both partitions and zeros elsewhere."""
    need_tool("sgdisk")
    subprocess.run(["truncate", "-s", "16M", str(path)], check=True)
    subprocess.run(["sgdisk", "-n1:2048:+3M", "-c1:boot_a", "-n2:0:+5M", "-c2:system_a",
                    str(path)], check=True, capture_output=True)
    with open(path, "r+b") as f:
        f.seek(2048 * 512)
        f.write(os.urandom(3 * MIB))
        f.seek(8192 * 512)
        f.write(os.urandom(1 * MIB) + bytes(2 * MIB) + b"\x5a" * MIB)
    return path.read_bytes()


def test_export_to_simg_expands_to_the_image(tmp_path: Path) -> None:
    data = disk(tmp_path / "d.img")
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(tmp_path / "d.simg")]) == 0
    assert simg2img([tmp_path / "d.simg"], tmp_path / "d.raw") == data
    assert (tmp_path / "d.simg").stat().st_size < 5 * MIB   # zeros and 0x5A became FILL


def test_export_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk(tmp_path / "d.img")
    (tmp_path / "d.simg").write_bytes(b"keep")
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(tmp_path / "d.simg")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "d.simg").read_bytes() == b"keep"


def test_export_partition_with_max_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = disk(tmp_path / "d.img")
    out = tmp_path / "system.simg"
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(out), "--partition",
                 "system_a", "--max-size", "400k", "--crc"]) == 0
    pieces = capsys.readouterr().out.split()
    assert len(pieces) >= 3 and pieces[0] == str(tmp_path / "system.0.simg")
    for p in pieces:
        assert Path(p).stat().st_size <= 400 * 1024
        assert len(simg2img([p], tmp_path / "one.raw")) == 5 * MIB   # each piece alone
    # sgdisk placed system_a at LBA 8192, 5 MiB long
    assert simg2img(pieces, tmp_path / "all.raw") == data[8192 * 512:8192 * 512 + 5 * MIB]


def test_unknown_simg_options_are_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    disk(tmp_path / "d.img")
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(tmp_path / "x.simg"),
                 "-O", "blocksize=1024"]) == 2
    assert "blocksize" in capsys.readouterr().err
    assert not (tmp_path / "x.simg").exists()


def test_block_size_option(tmp_path: Path) -> None:
    data = disk(tmp_path / "d.img")
    out = tmp_path / "k.simg"
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(out),
                 "-O", "block_size=1024"]) == 0
    assert parse_sparse(out.read_bytes())[0].blk_sz == 1024
    assert simg2img([out], tmp_path / "k.raw") == data


def test_img2simg_image_through_show_verify_export_raw(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = disk(tmp_path / "d.img")
    simg = img2simg(tmp_path / "d.img", tmp_path / "t.simg")
    assert main(["show", str(simg)]) == 0
    assert "simg" in capsys.readouterr().out
    assert main(["info", str(simg)]) == 0   # the GPT inside the sparse image
    shown = capsys.readouterr().out
    assert "system_a" in shown and "boot_a" in shown
    assert main(["verify", str(simg)]) == 0
    assert main(["export", str(simg), "--to", "raw", str(tmp_path / "back.raw")]) == 0
    assert (tmp_path / "back.raw").read_bytes() == data


def test_verify_catches_a_bad_crc_chunk(tmp_path: Path) -> None:
    disk(tmp_path / "d.img")
    out = tmp_path / "c.simg"
    assert main(["export", str(tmp_path / "d.img"), "--to", "simg", str(out), "--crc"]) == 0
    assert main(["verify", str(out)]) == 0
    blob = bytearray(out.read_bytes())
    blob[-2] ^= 0xFF   # inside the trailing CRC32 chunk's value
    out.write_bytes(bytes(blob))
    assert main(["verify", str(out)]) == 3


def test_restore_leaves_dont_care_ranges_alone(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A simg2simg piece: its DONT_CARE ranges keep the target's bytes; the rest is written."""
    need_tool("simg2simg")
    data = disk(tmp_path / "d.img")
    simg = img2simg(tmp_path / "d.img", tmp_path / "d.simg")
    subprocess.run(["simg2simg", str(simg), str(tmp_path / "p.simg"), str(2 * MIB)], check=True,
                   capture_output=True)
    target = tmp_path / "target.img"
    before = os.urandom(len(data))
    target.write_bytes(before)
    assert main(["restore", str(tmp_path / "p.simg.0"), str(target), "--dry-run"]) == 0
    assert "DONT_CARE" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "p.simg.0"), str(target), "--yes", "--quiet"]) == 0
    after = target.read_bytes()
    assert after != before
    # what simg2img writes for the piece is what the restore wrote; holes kept the old bytes
    piece = simg2img([tmp_path / "p.simg.0"], tmp_path / "piece.raw")
    records = parse_sparse((tmp_path / "p.simg.0").read_bytes())[1]
    assert any(c.chunk_type == CHUNK_DONT_CARE for c in records)
    for start, count, ctype in [(c.start_block, c.block_count, c.chunk_type) for c in records]:
        a, b = start * 4096, (start + count) * 4096
        expected = before[a:b] if ctype == CHUNK_DONT_CARE else piece[a:b]
        assert after[a:b] == expected


def test_acquire_format_simg(tmp_path: Path) -> None:
    data = disk(tmp_path / "d.img")
    out = tmp_path / "a.simg"
    assert main(["acquire", str(tmp_path / "d.img"), str(out), "--format", "simg",
                 "--quiet"]) == 0
    assert simg2img([out], tmp_path / "a.raw") == data
    assert main(["verify", str(out)]) == 0   # whole-image hashes from a.simg.json
    raw = next(c for c in parse_sparse(out.read_bytes())[1] if c.chunk_type == CHUNK_RAW)
    blob = bytearray(out.read_bytes())
    blob[raw.data_offset + 100] ^= 0x01
    out.write_bytes(bytes(blob))
    assert main(["verify", str(out)]) == 3   # the sha256 no longer matches


def test_acquire_simg_of_an_odd_size_keeps_the_true_size(tmp_path: Path) -> None:
    """2051 sectors: the sparse file pads to whole blocks, IMAGE.json keeps the real count."""
    from imager.image.sparse import SparseReader

    src = tmp_path / "odd.img"
    data = os.urandom(2051 * 512)
    src.write_bytes(data)
    out = tmp_path / "odd.simg"
    assert main(["acquire", str(src), str(out), "--format", "simg", "--quiet"]) == 0
    assert simg2img([out], tmp_path / "odd.raw") == data + bytes(5 * 512)
    reader = SparseReader(str(out))
    try:
        assert reader.sector_count == 2051 and reader.hashes
    finally:
        reader.close()
    assert main(["verify", str(out)]) == 0
    assert main(["export", str(out), "--to", "raw", str(tmp_path / "back.raw")]) == 0
    assert (tmp_path / "back.raw").read_bytes() == data


def test_an_interrupted_simg_acquisition_is_not_resumed(tmp_path: Path) -> None:
    from imager.errors import UsageError
    from imager.image.sparse_writer import SparseSink

    with pytest.raises(UsageError, match="cannot be resumed"):
        SparseSink.reopen(str(tmp_path / "x.simg"), 4096, sector_size=512, sector_count=8)


def test_acquire_simg_from_4096_byte_sectors(tmp_path: Path) -> None:
    """The sector size comes back from IMAGE.json (a sparse file itself has none)."""
    from imager.image.open import open_image

    src = tmp_path / "4k.img"
    data = os.urandom(300 * 4096) + bytes(100 * 4096)
    src.write_bytes(data)
    out = tmp_path / "4k.simg"
    assert main(["acquire", str(src), str(out), "--format", "simg", "--sector-size", "4096",
                 "--quiet"]) == 0
    reader = open_image(str(out))
    try:
        assert (reader.sector_size, reader.sector_count) == (4096, 400)
        assert reader.read(0, 400) == data
    finally:
        reader.close()
    assert main(["verify", str(out)]) == 0


def test_native_image_with_an_excluded_partition_exports_dont_care(tmp_path: Path) -> None:
    """acquire --exclude boot_a (NOT_ACQUIRED) -> export --to simg: boot_a is DONT_CARE."""
    data = disk(tmp_path / "d.img")
    native = tmp_path / "d.native"
    assert main(["acquire", str(tmp_path / "d.img"), str(native), "--exclude", "boot_a",
                 "--quiet"]) == 0
    out = tmp_path / "n.simg"
    assert main(["export", str(native), "--to", "simg", str(out)]) == 0
    # sgdisk put boot_a at LBA 2048..8191 = 4096-byte blocks 256..1023
    records = parse_sparse(out.read_bytes())[1]
    dont_care = {(c.start_block, c.end_block) for c in records if c.chunk_type == CHUNK_DONT_CARE}
    assert (256, 1024) in dont_care
    expanded = simg2img([out], tmp_path / "n.raw")
    assert expanded[:2048 * 512] == data[:2048 * 512]
    assert expanded[2048 * 512:8192 * 512] == bytes(6144 * 512)
    assert expanded[8192 * 512:] == data[8192 * 512:]
