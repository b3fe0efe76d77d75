"""The restore engine: exact copies, verify-before-write, zero modes, read-back, only-changed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import pytest

from formats.extent import Extent, Kind
from imager.devices.file import FileTarget
from imager.errors import VerificationFailed
from imager.image.base import Chunk
from imager.restore import CorruptImageChunk, restore
from imager.restore_plan import build_plan
from tests.conftest import loop_device, need_tool
from tests.restore_support import (
    ChunkedFileReader,
    MemTarget,
    MiB,
    e2fsck_clean,
    make_gpt_image,
    sha256_file,
)

CHUNK = 1024 * 512  # ChunkedFileReader's default chunk: 1024 sectors


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]]]:
    need_tool("sgdisk", "mkfs.ext4", "e2fsck")
    path = tmp_path_factory.mktemp("restore") / "src.img"
    return path, make_gpt_image(path)


def filled(path: Path, size: int, byte: int = 0xEE) -> Path:
    path.write_bytes(bytes([byte]) * size)
    return path


def run(image: Path, target_path: Path, **kw: object) -> object:
    reader = ChunkedFileReader(image)
    target = FileTarget(str(target_path))
    try:
        plan = build_plan(reader, target, write_unread=bool(kw.pop("write_unread", False)))
        return restore(reader, target, plan, **kw)
    finally:
        target.close()
        reader.close()


def test_restore_onto_file_equals_image_and_ext4_is_clean(image, tmp_path: Path) -> None:
    src, parts = image
    dst = filled(tmp_path / "dst.img", src.stat().st_size)
    result = run(src, dst)
    assert sha256_file(dst) == sha256_file(src)
    assert result.verified and result.steps_written == result.steps_total
    for name in ("system", "userdata"):
        fsck = e2fsck_clean(dst, *parts[name], tmp_path)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def restore_onto_loop(src: Path, backing: Path, **plan_kw: object):
    with loop_device(backing) as dev:
        reader = ChunkedFileReader(src)
        target = FileTarget(dev)
        try:
            assert target.identity.kind == "block"
            plan = build_plan(reader, target, **plan_kw)
            result = restore(reader, target, plan, zeros="discard")
        finally:
            target.close()
            reader.close()
        with open(dev, "rb") as f:
            return plan, result, f.read()


def test_restore_onto_loop_block_device_equals_image(image, tmp_path: Path) -> None:
    src, _ = image
    backing = filled(tmp_path / "dev.img", src.stat().st_size)
    _, result, data = restore_onto_loop(src, backing, include_identity=True)
    assert hashlib.sha256(data).hexdigest() == sha256_file(src)
    assert result.steps_zeroed > 0
    assert result.steps_zeroed + result.steps_written == result.steps_total


def test_identity_partitions_are_skipped_on_another_device(image, tmp_path: Path) -> None:
    src, parts = image
    backing = filled(tmp_path / "dev.img", src.stat().st_size)
    plan, _, data = restore_onto_loop(src, backing)  # raw image: its source is unknown
    assert plan.skipped_identity == ("modemst1",)
    assert any("identity partitions skipped" in n and "modemst1" in n for n in plan.notes)
    first, last = parts["modemst1"]
    want = src.read_bytes()
    lo, hi = first * 512, (last + 1) * 512
    assert data[lo:hi] == b"\xee" * (hi - lo)
    assert data[:lo] == want[:lo] and data[hi:] == want[hi:]


def test_bit_flip_stops_before_the_bad_chunk_and_writes_nothing_after(image, tmp_path) -> None:
    src, parts = image
    corrupt = tmp_path / "corrupt.img"
    corrupt.write_bytes(src.read_bytes())
    reader = ChunkedFileReader(corrupt)  # check values taken from the good bytes
    bad_chunk = parts["userdata"][0] * 512 // CHUNK + 1
    with open(corrupt, "r+b") as f:  # flip one bit in the middle of that chunk
        f.seek(bad_chunk * CHUNK + 1234)
        byte = f.read(1)[0]
        f.seek(bad_chunk * CHUNK + 1234)
        f.write(bytes([byte ^ 0x10]))
    dst = filled(tmp_path / "dst.img", src.stat().st_size)
    target = FileTarget(str(dst))
    with pytest.raises(CorruptImageChunk) as info:
        restore(reader, target, build_plan(reader, target))
    target.close()
    reader.close()
    assert info.value.chunk == bad_chunk and info.value.exit_code == 3
    assert f"image chunk {bad_chunk}" in str(info.value)
    written = dst.read_bytes()
    assert written[:bad_chunk * CHUNK] == src.read_bytes()[:bad_chunk * CHUNK]
    assert written[bad_chunk * CHUNK:] == b"\xee" * (len(written) - bad_chunk * CHUNK)


def test_zeros_skip_leaves_zero_chunks_untouched(image, tmp_path: Path) -> None:
    src, _ = image
    dst = filled(tmp_path / "dst.img", src.stat().st_size)
    result = run(src, dst, zeros="skip")
    data, want = dst.read_bytes(), src.read_bytes()
    zero_chunks = [i for i in range(len(want) // CHUNK)
                   if want[i * CHUNK:(i + 1) * CHUNK].count(0) == CHUNK]
    assert zero_chunks and result.steps_skipped == len(zero_chunks)
    for i in range(len(want) // CHUNK):
        got = data[i * CHUNK:(i + 1) * CHUNK]
        assert got == (b"\xee" * CHUNK if i in zero_chunks else want[i * CHUNK:(i + 1) * CHUNK])


def test_zeros_discard_on_a_file_reads_back_like_the_image(image, tmp_path: Path) -> None:
    src, _ = image
    dst = filled(tmp_path / "dst.img", src.stat().st_size)
    result = run(src, dst, zeros="discard")
    assert result.steps_zeroed > 0
    assert sha256_file(dst) == sha256_file(src)


class UnreadReader(ChunkedFileReader):
    """Chunk 3 was not read (UNREAD), chunk 5 not acquired; both read as zeros."""

    KINDS: ClassVar[dict[int, Kind]] = {3: Kind.UNREAD, 5: Kind.NOT_ACQUIRED}

    def chunks(self):
        for c in super().chunks():
            kind = self.KINDS.get(c.index)
            yield c if kind is None else Chunk(c.index, Extent(c.extent.start_lba,
                                                               c.extent.count, kind), None)

    def read_chunk(self, chunk: Chunk) -> bytes:
        if chunk.extent.kind in self.KINDS.values():
            return bytes(chunk.extent.count * self.sector_size)
        return super().read_chunk(chunk)


@pytest.mark.parametrize("write_unread", [False, True])
def test_unread_and_not_acquired_are_written_only_when_asked(image, tmp_path, write_unread):
    src, _ = image
    dst = filled(tmp_path / "dst.img", src.stat().st_size)
    reader = UnreadReader(src)
    target = FileTarget(str(dst))
    result = restore(reader, target, build_plan(reader, target, write_unread=write_unread))
    target.close()
    reader.close()
    data, want = dst.read_bytes(), src.read_bytes()
    for i in range(len(want) // CHUNK):
        got = data[i * CHUNK:(i + 1) * CHUNK]
        if i in UnreadReader.KINDS:
            assert got == (bytes(CHUNK) if write_unread else b"\xee" * CHUNK)
        else:
            assert got == want[i * CHUNK:(i + 1) * CHUNK]
    assert result.steps_skipped == (0 if write_unread else 2)


def test_read_back_mismatch_is_rewritten_then_reported(image, tmp_path: Path) -> None:
    src, _ = image
    size = src.stat().st_size
    reader = ChunkedFileReader(src)
    flaky = MemTarget(size, bad_lba=2048 + 7, bad_writes=2)
    result = restore(reader, flaky, build_plan(reader, flaky, include_identity=True))
    assert result.rewrites == 2 and bytes(flaky.buf) == src.read_bytes()
    broken = MemTarget(size, bad_lba=2048 + 7, bad_writes=100)
    with pytest.raises(VerificationFailed, match=r"first difference at LBA 2055") as info:
        restore(reader, broken, build_plan(reader, broken))
    assert info.value.exit_code == 3
    unverified = MemTarget(size, bad_lba=2048 + 7, bad_writes=100)
    plan = build_plan(reader, unverified, include_identity=True)
    assert restore(reader, unverified, plan, verify=False).rewrites == 0
    assert bytes(unverified.buf) != src.read_bytes()  # --no-verify really does not read back
    reader.close()


def test_read_back_of_a_native_image_uses_its_blake3_checks(image, tmp_path: Path) -> None:
    """Whole chunks of a blake3 image are read back against the image's own check values
    (no digest computed on write); a corrupted landing is still found and rewritten."""
    from imager.image.native import NativeReader
    from tests.acquire_support import cli

    src, _ = image
    native = tmp_path / "src.imgz"
    assert cli("acquire", str(src), str(native), "--quiet")[0] == 0
    reader = NativeReader(str(native))
    assert reader.manifest.chunk_check == "blake3"
    size = src.stat().st_size
    flaky = MemTarget(size, bad_lba=2048 + 9, bad_writes=1)
    result = restore(reader, flaky, build_plan(reader, flaky, include_identity=True))
    assert result.rewrites == 1 and bytes(flaky.buf) == src.read_bytes()
    broken = MemTarget(size, bad_lba=2048 + 9, bad_writes=100)
    with pytest.raises(VerificationFailed, match=r"first difference at LBA 2057"):
        restore(reader, broken, build_plan(reader, broken, include_identity=True))
    reader.close()


def test_only_changed_writes_only_the_differing_chunks(image, tmp_path: Path) -> None:
    src, _ = image
    dst = tmp_path / "dst.img"
    dst.write_bytes(src.read_bytes())
    with open(dst, "r+b") as f:
        for chunk in (0, 5, 9):  # three chunks changed (9 has two changed bytes)
            f.seek(chunk * CHUNK + 100)
            f.write(b"\x42")
        f.seek(9 * CHUNK + 5000)
        f.write(b"\x43")
    result = run(src, dst, only_changed=True)
    assert result.steps_written == 3
    assert result.steps_unchanged == result.steps_total - 3
    assert sha256_file(dst) == sha256_file(src)


def test_restore_to_a_larger_file_leaves_the_tail_alone(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    src.write_bytes(bytes(range(256)) * (4 * MiB // 256))
    dst = filled(tmp_path / "dst.img", 5 * MiB)
    run(src, dst)
    data = dst.read_bytes()
    assert data[:4 * MiB] == src.read_bytes() and data[4 * MiB:] == b"\xee" * MiB
