"""The threaded paths: verify's reader thread, restore's two-thread reads and background
read-back, and read-back of hole-punched ranges on file targets.

Oracles: the source file's own bytes (a construction: random, zero and 0xFF megabytes),
``sha256sum`` and the file system's extent map (``os.lseek`` SEEK_DATA/SEEK_HOLE).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

import imager.devices.file as devfile
from formats.extent import Kind
from imager.errors import DeviceError, VerificationFailed
from imager.image.native import NativeReader
from tests.acquire_support import cli, flip_bit, small_source, tool_hash

MiB = 1 << 20
CHUNK = MiB
PATTERN = b"\xa5\x5a\xc3\x3c" * 128  # one sector of non-zero pre-fill


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source, native image): 8 MiB of random/zero/0xFF megabytes + 5 sectors, 1 MiB chunks."""
    d = tmp_path_factory.mktemp("threaded")
    src = small_source(d / "src.img", seed=11, mib=8)
    code, _, err = cli("acquire", str(src), str(d / "img.imgr"), "--chunk-size", str(CHUNK),
                       "--quiet")
    assert code == 0, err
    return src, d / "img.imgr"


@pytest.fixture
def image(made: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the native image (tests damage it)."""
    return Path(shutil.copy(made[1], tmp_path / "img.imgr"))


def _frame_middle(image: Path, index: int) -> int:
    reader = NativeReader(str(image))
    try:
        return (reader.offsets[index] + reader.offsets[index + 1]) // 2
    finally:
        reader.close()


def _kinds(image: Path) -> list[Kind]:
    reader = NativeReader(str(image))
    try:
        return [c.extent.kind for c in reader.chunks()]
    finally:
        reader.close()


def _prefilled_target(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(PATTERN * (size // len(PATTERN)))
    assert path.stat().st_size == size
    return path


def _threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def _restore_cli(image: Path, target: Path, *extra: str) -> tuple[int, str, str]:
    return cli("restore", str(image), str(target), "--yes", "--quiet",
               "--journal", str(target.parent / "restore.journal"), *extra)


def _failing_read_chunk(monkeypatch: pytest.MonkeyPatch, bad_index: int) -> None:
    """NativeReader.read_chunk raises DeviceError for chunk ``bad_index`` (in the worker)."""
    real = NativeReader.read_chunk

    def read_chunk(self: NativeReader, chunk):  # type: ignore[no-untyped-def]
        if chunk.index == bad_index:
            raise DeviceError(f"test: medium vanished under chunk {chunk.index}")
        return real(self, chunk)

    monkeypatch.setattr(NativeReader, "read_chunk", read_chunk)


# ---------------------------------------------------------------- verify (reader thread)

def test_verify_names_exactly_the_flipped_middle_chunk(image: Path) -> None:
    code, out, err = cli("verify", "--json", str(image))
    assert code == 0, err
    assert json.loads(out)["bad_chunks"] == []
    flip_bit(image, _frame_middle(image, 4), 3)
    code, out, err = cli("verify", "--json", str(image))
    assert code == VerificationFailed.exit_code == 3, err
    report = json.loads(out)
    assert report["ok"] is False
    assert report["chunks"] == 9  # every chunk was still visited, in order
    assert [(b[0], b[1], b[2]) for b in report["bad_chunks"]] == [(4, 4 * 2048, 2048)]
    code, out, _ = cli("verify", str(image))
    assert code == 3
    assert "BAD chunk 4 (LBA 8192-10239)" in out
    assert "BAD chunk" not in out.replace("BAD chunk 4 ", "")


def test_verify_reader_thread_error_reaches_cli(image: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_read_chunk(monkeypatch, 3)
    code, out, err = cli("verify", "--quiet", str(image))
    assert code == DeviceError.exit_code
    assert code != 0
    assert "medium vanished under chunk 3" in err
    assert "Traceback" not in err + out
    assert "verified" not in out
    assert _threads("verify-read") == []


def test_verify_image_reraises_the_reader_threads_error(image: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from imager.verify import verify_image

    _failing_read_chunk(monkeypatch, 5)
    seen: list[int] = []
    reader = NativeReader(str(image))
    try:
        with pytest.raises(DeviceError, match="chunk 5"):
            verify_image(reader, progress=lambda done, total, label: seen.append(done))
    finally:
        reader.close()
    assert seen == [(i + 1) * CHUNK for i in range(5)]  # chunks 0-4 consumed, in order
    assert _threads("verify-read") == []


def test_verify_consumer_error_stops_the_reader_thread(image: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from imager import verify as verify_mod

    calls: list[int] = []
    real = NativeReader.read_chunk

    def counting(self: NativeReader, chunk):  # type: ignore[no-untyped-def]
        calls.append(chunk.index)
        return real(self, chunk)

    def progress(done: int, total: int, label: str) -> None:
        if done >= 2 * CHUNK:
            raise RuntimeError("consumer gave up")

    monkeypatch.setattr(NativeReader, "read_chunk", counting)
    reader = NativeReader(str(image))
    try:
        with pytest.raises(RuntimeError, match="consumer gave up"):
            verify_mod.verify_image(reader, progress=progress)
    finally:
        reader.close()
    assert _threads("verify-read") == []
    # the producer stopped: at most the queue's depth (+ one in hand each side) past chunk 1
    assert calls == list(range(len(calls)))
    assert len(calls) <= 2 + verify_mod.PREFETCH + 1


def test_verify_truncated_image_is_one_line_exit_2(image: Path) -> None:
    with open(image, "r+b") as f:
        f.truncate(_frame_middle(image, 6))
    code, out, err = cli("verify", "--quiet", str(image))
    assert code == 2
    assert "Traceback" not in err + out
    assert "incomplete" in err


# ---------------------------------------------------------------- restore (threaded reads)

@pytest.mark.parametrize("bad", [1, 4, 6, 7, 8])
def test_restore_corrupt_chunk_writes_nothing_from_it(made: tuple[Path, Path], image: Path,
                                                      tmp_path: Path, bad: int) -> None:
    src = made[0]
    size = src.stat().st_size
    target = _prefilled_target(tmp_path / "target.img", size)
    flip_bit(image, _frame_middle(image, bad), 0)
    code, _, err = _restore_cli(image, target)
    assert code == 3, err
    assert f"image chunk {bad} " in err
    assert "Traceback" not in err
    got = target.read_bytes()
    want = src.read_bytes()
    assert got[:bad * CHUNK] == want[:bad * CHUNK]
    assert got[bad * CHUNK:] == (PATTERN * (size // len(PATTERN)))[bad * CHUNK:]


def test_restore_small_batches_corrupt_chunk_keeps_verified_prefix(
        made: tuple[Path, Path], image: Path, tmp_path: Path) -> None:
    """1-MiB batches: earlier batches are flushed and read back in the background thread."""
    from imager.devices.file import FileTarget
    from imager.restore import CorruptImageChunk, restore
    from imager.restore_plan import build_plan

    src = made[0]
    size = src.stat().st_size
    target_path = _prefilled_target(tmp_path / "target.img", size)
    flip_bit(image, _frame_middle(image, 6), 5)
    reader, target = NativeReader(str(image)), FileTarget(str(target_path))
    try:
        plan = build_plan(reader, target)
        with pytest.raises(CorruptImageChunk) as info:
            restore(reader, target, plan, batch_bytes=CHUNK)
    finally:
        reader.close()
        target.close()
    assert info.value.chunk == 6
    got, want = target_path.read_bytes(), src.read_bytes()
    assert got[:6 * CHUNK] == want[:6 * CHUNK]
    assert got[6 * CHUNK:] == (PATTERN * (size // len(PATTERN)))[6 * CHUNK:]
    assert _threads("restore-") == []


def test_restore_reader_error_reaches_cli_and_stops_writes(
        made: tuple[Path, Path], image: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = made[0]
    size = src.stat().st_size
    target = _prefilled_target(tmp_path / "target.img", size)
    _failing_read_chunk(monkeypatch, 6)
    code, out, err = _restore_cli(image, target)
    assert code == DeviceError.exit_code
    assert code != 0
    assert "medium vanished under chunk 6" in err
    assert "Traceback" not in err + out
    got = target.read_bytes()
    assert got[6 * CHUNK:] == (PATTERN * (size // len(PATTERN)))[6 * CHUNK:]
    assert _threads("restore-") == []


# ---------------------------------------------------------------- restore --zeros discard

def _zero_chunk_ranges(image: Path) -> list[tuple[int, int]]:
    ranges = [(i * CHUNK, (i + 1) * CHUNK) for i, k in enumerate(_kinds(image))
              if k is Kind.ZERO]
    assert ranges, "the sample image should have ZERO chunks"
    return ranges


def _is_hole(path: Path, start: int, end: int) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            return os.lseek(fd, start, os.SEEK_DATA) >= end
        except OSError:  # ENXIO: no data from start to the end of the file
            return True
    finally:
        os.close(fd)


def _punch_supported(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.write_bytes(b"\x01" * (2 * MiB))
    fd = os.open(probe, os.O_RDWR)
    try:
        devfile._punch_hole(fd, 0, MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    return _is_hole(probe, 0, MiB)


def test_restore_discard_punches_holes_that_read_as_zeros(made: tuple[Path, Path], image: Path,
                                                          tmp_path: Path) -> None:
    assert _punch_supported(tmp_path), "tmp_path's file system must support hole punching"
    src = made[0]
    target = _prefilled_target(tmp_path / "target.img", src.stat().st_size)
    holes = _zero_chunk_ranges(image)
    assert not any(_is_hole(target, a, b) for a, b in holes)
    code, out, err = _restore_cli(image, target, "--zeros", "discard", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verified"] is True
    assert summary["bytes_zeroed"] == len(holes) * CHUNK
    assert all(_is_hole(target, a, b) for a, b in holes)
    data = target.read_bytes()
    assert all(data[a:b] == bytes(b - a) for a, b in holes)
    assert tool_hash("sha256sum", target) == tool_hash("sha256sum", src)


def test_restore_discard_when_punching_silently_does_nothing(
        made: tuple[Path, Path], image: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-back must not trust a punch that did not happen.

    Acceptable: exit 3 (VerificationFailed), or success only with a target that really
    equals the source (the read-back saw the stale bytes and rewrote them as zeros).
    Never: success while the zero ranges still hold the old bytes.
    """
    punched: list[tuple[int, int]] = []

    def no_op_punch(fd: int, offset: int, length: int) -> None:
        punched.append((offset, length))  # "succeeds" without deallocating anything

    monkeypatch.setattr(devfile, "_punch_hole", no_op_punch)
    src = made[0]
    target = _prefilled_target(tmp_path / "target.img", src.stat().st_size)
    holes = _zero_chunk_ranges(image)
    code, out, err = _restore_cli(image, target, "--zeros", "discard", "--json")
    assert punched, "the restore should have tried to punch the ZERO chunks"
    assert not any(_is_hole(target, a, b) for a, b in holes)  # the punch really did nothing
    assert code in (0, 3), err
    if code == 3:
        assert "reads back different" in err
        return
    data = target.read_bytes()
    assert all(data[a:b] == bytes(b - a) for a, b in holes), \
        "restore reported success but the zero ranges still hold the old bytes"
    assert tool_hash("sha256sum", target) == tool_hash("sha256sum", src)
    assert json.loads(out)["rewrites"] >= len(holes)
