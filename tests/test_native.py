"""The native image: stock zstd compatibility, random access, corruption located, hostile files."""

from __future__ import annotations

import os
import random
import shutil
import tracemalloc
from pathlib import Path

import pytest

from formats.errors import FormatError
from formats.zstdframe import SeekEntry, build_seek_table, build_skippable
from imager.errors import ImagerError
from imager.image.native import MANIFEST_NIBBLE, MANIFEST_TAG, NativeReader
from imager.image.open import open_image
from imager.verify import verify_image
from tests.acquire_support import (
    MiB,
    cli,
    file_sha256,
    flip_bit,
    phone,
    small_source,
    tool_hash,
    zstd_d_sha256,
)

__all__ = ["phone"]


@pytest.fixture(scope="module")
def phone_native(phone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("native") / "phone.imgz"
    code, _, err = cli("acquire", str(phone), str(image), "--quiet", "--chunk-size", "1M",
                       "--hash", "md5,sha1,sha256", "--case", "C-7", "--examiner", "E. X.")
    assert code == 0, err
    return image


@pytest.fixture
def small_native(tmp_path: Path) -> tuple[Path, Path]:
    src = small_source(tmp_path / "src.img")
    image = tmp_path / "small.imgz"
    code, _, err = cli("acquire", str(src), str(image), "--quiet", "--chunk-size", "1M")
    assert code == 0, err
    return src, image


def test_stock_zstd_gives_the_device_bytes(phone: Path, phone_native: Path) -> None:
    assert zstd_d_sha256(phone_native) == tool_hash("sha256sum", phone)
    assert os.path.getsize(phone_native) < os.path.getsize(phone) // 2


def test_manifest_hashes_equal_coreutils(phone: Path, phone_native: Path) -> None:
    with NativeReader(str(phone_native)) as reader:
        assert reader.hashes == {"md5": tool_hash("md5sum", phone),
                                 "sha1": tool_hash("sha1sum", phone),
                                 "sha256": tool_hash("sha256sum", phone)}
        m = reader.manifest
        assert m.case == {"case": "C-7", "examiner": "E. X."}
        assert m.source["size_bytes"] == os.path.getsize(phone)
        assert m.chunk_sectors * m.sector_size == MiB


def test_random_access_reads_equal_source(phone: Path, phone_native: Path) -> None:
    rng = random.Random(5)
    with open(phone, "rb") as f, NativeReader(str(phone_native)) as reader:
        assert isinstance(open_image(str(phone_native)), NativeReader)
        for _ in range(40):
            lba = rng.randrange(reader.sector_count)
            count = rng.randrange(1, min(6000, reader.sector_count - lba) + 1)
            f.seek(lba * 512)
            assert reader.read(lba, count) == f.read(count * 512), (lba, count)
        chunks = list(reader.chunks())
        assert sum(c.extent.count for c in chunks) == reader.sector_count
        assert reader.read_chunk(chunks[-1]) == reader.read(chunks[-1].extent.start_lba,
                                                            chunks[-1].extent.count)


def test_every_chunk_is_one_frame_and_zero_chunks_are_tiny(phone_native: Path) -> None:
    with NativeReader(str(phone_native)) as reader:
        kinds = {c.extent.kind.value for c in reader.chunks()}
        assert "zero" in kinds and "data" in kinds
        for chunk, entry in zip(reader.chunks(), reader.table.entries):
            assert entry.decompressed_size == chunk.extent.count * 512
            if chunk.extent.kind.value == "zero":
                assert entry.compressed_size <= 64  # 1 MiB chunk


def test_flipped_bit_in_a_data_frame_is_located(phone_native: Path, tmp_path: Path) -> None:
    with NativeReader(str(phone_native)) as reader:
        offsets = reader.offsets
    rng = random.Random(11)
    for _ in range(6):
        pos = rng.randrange(offsets[-1])
        index = max(i for i in range(len(offsets) - 1) if offsets[i] <= pos)
        bad = tmp_path / "bad.imgz"
        shutil.copyfile(phone_native, bad)
        flip_bit(bad, pos, rng.randrange(8))
        with NativeReader(str(bad)) as reader:
            report = verify_image(reader)
        assert [b[0] for b in report.bad_chunks] == [index], (pos, report.bad_chunks)
        assert not report.ok
    code, out, _ = cli("verify", "--quiet", str(bad))
    assert code == 3 and f"BAD chunk {index} " in out


def test_flipped_bit_in_manifest_or_seek_table_is_detected(small_native: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    _, image = small_native
    with NativeReader(str(image)) as reader:
        trailer_start = reader.offsets[-1]
    size = os.path.getsize(image)
    rng = random.Random(3)
    positions = list(range(size - 130, size)) + rng.sample(range(trailer_start, size - 130), 40)
    for pos in positions:
        bad = tmp_path / "bad.imgz"
        shutil.copyfile(image, bad)
        flip_bit(bad, pos, pos % 8)
        try:
            with NativeReader(str(bad)) as reader:
                assert not verify_image(reader).ok, pos
        except (FormatError, ImagerError):
            pass
    code, _, err = cli("verify", "--quiet", str(bad))
    assert code in (2, 3) and "Traceback" not in err


def test_truncated_images_give_clean_errors(small_native: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    _, image = small_native
    data = image.read_bytes()
    cuts = [0, 1, 8, 100, len(data) // 2, len(data) - 200, len(data) - 10, len(data) - 1]
    for cut in cuts:
        bad = tmp_path / "cut.imgz"
        bad.write_bytes(data[:cut])
        with pytest.raises((FormatError, ImagerError)):
            NativeReader(str(bad))
    code, _, err = cli("verify", str(bad))
    assert code == 2 and "no seek table" in err and "run the same command again" in err


def test_hostile_trailers_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    frames = build_skippable(MANIFEST_TAG + b"{}", MANIFEST_NIBBLE)
    cases = {
        "huge-count": frames + build_seek_table([])[:-9] + (0x7FFFFFF).to_bytes(4, "little")
        + b"\x80" + bytes.fromhex("b1ea928f"),
        "huge-frame": build_seek_table([SeekEntry(0xFFFFFFFF, 0xFFFFFFFF, 0)] * 3),
        "manifest-not-json": frames + build_seek_table([]),
        "lying-sizes": frames + build_seek_table([SeekEntry(5, 1 << 20, 0)]),
    }
    tracemalloc.start()
    try:
        for name, blob in cases.items():
            path = tmp_path / name
            path.write_bytes(blob)
            with pytest.raises((FormatError, ImagerError)):
                NativeReader(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB


def test_fuzzed_trailer_bytes_fail_cleanly(small_native: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    _, image = small_native
    data = bytearray(image.read_bytes())
    rng = random.Random(17)
    for _ in range(40):
        bad = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            bad[rng.randrange(len(bad) - 400, len(bad))] = rng.randrange(256)
        path = tmp_path / "fuzz.imgz"
        path.write_bytes(bytes(bad))
        try:
            with NativeReader(str(path)) as reader:
                verify_image(reader)
        except (FormatError, ImagerError):
            pass


def test_small_source_round_trip_with_short_tail(small_native: tuple[Path, Path]) -> None:
    src, image = small_native
    assert zstd_d_sha256(image) == file_sha256(src)
    with NativeReader(str(image)) as reader:
        kinds = [c.extent.kind.value for c in reader.chunks()]
        assert kinds == ["data", "zero", "fill", "data"] * 3 + ["data"]
        assert reader.chunks().__next__().check is not None
