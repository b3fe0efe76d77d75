"""The plan, the classifier and the pipeline (library level): selection, bad sectors, errors."""

from __future__ import annotations

import errno
import hashlib
import random
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from formats.extent import Extent, Kind
from imager.acquisition import AcquireRequest, run_acquire
from imager.devices.base import BaseSource, Identity
from imager.errors import DeviceGone, Interrupted, SourceChanged, UsageError
from imager.hashing import CHUNK_CHECK, MultiHash, classify
from imager.image.native import NativeReader, NativeSink
from imager.pipeline import Progressed, Writer, acquire
from imager.plan import build_plan
from imager.verify import verify_image
from tests.acquire_support import MiB, file_sha256, small_source, zstd_d_sha256


def part(name: str, first: int, last: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, first_lba=first, last_lba=last)


TABLE = SimpleNamespace(
    partitions=(part("boot_a", 2048, 4095), part("boot_b", 4096, 6143),
                part("system_a", 8192, 16383), part("userdata", 16384, 20479)),
    metadata_extents=(Extent(0, 34), Extent(20480 - 33, 33)))


def test_plan_without_selection_reads_everything() -> None:
    plan = build_plan(20480, 512, 2048, TABLE)
    assert plan.selected == (Extent(0, 20480),) and plan.not_acquired() == []
    assert plan.chunk_count == 10 and plan.task(1).label == "boot_a"


def test_plan_partition_globs_keep_tables() -> None:
    plan = build_plan(20480, 512, 2048, TABLE, include=("boot_*",))
    assert plan.selected == (Extent(0, 34), Extent(2048, 4096), Extent(20447, 33))
    assert plan.not_acquired() == [(34, 2014), (6144, 14303)]
    task = plan.task(0)
    assert task.reads == (Extent(0, 34),) and task.skipped == [Extent(34, 2014,
                                                                      Kind.NOT_ACQUIRED)]
    assert plan.task(5).reads == ()


def test_plan_exclude() -> None:
    plan = build_plan(20480, 512, 2048, TABLE, exclude=("user*",))
    assert plan.not_acquired() == [(16384, 4063)]  # the backup GPT stays
    assert plan.acquired_sectors == 20480 - 4063


def test_plan_errors_name_the_choices() -> None:
    with pytest.raises(UsageError, match="matches no partition.*boot_a"):
        build_plan(20480, 512, 2048, TABLE, include=("nope",))
    with pytest.raises(UsageError, match="need a partition table"):
        build_plan(20480, 512, 2048, None, exclude=("x",))


@pytest.mark.parametrize("data,expect", [
    (bytes(4096), (Kind.ZERO, None)), (b"\xff" * 4096, (Kind.FILL, 0xFF)),
    (bytes(4095) + b"\1", (Kind.DATA, None)), (b"\xff" * 4095 + b"\0", (Kind.DATA, None)),
    (b"\1\2" * 2048, (Kind.DATA, None))])
def test_classify(data: bytes, expect: tuple) -> None:
    assert classify(data) == expect


class FakeSource(BaseSource):
    """In-memory sectors; ``bad`` LBAs fail with EIO; ``gone_at`` / ``ctrl_c_at`` on a read."""

    def __init__(self, data: bytes, bad: set[int] = frozenset(), gone_at: int | None = None,
                 ctrl_c_at: int | None = None) -> None:
        super().__init__(512, len(data) // 512, Identity("fake", "fake", len(data), 512))
        self.data, self.bad, self.gone_at, self.ctrl_c_at = data, bad, gone_at, ctrl_c_at
        self.reads, self.lock = [], threading.Lock()

    def _read(self, lba: int, count: int) -> bytes:
        with self.lock:
            self.reads.append(lba)
        big = count >= 256  # chunk reads, not partition-table reads
        if big and self.gone_at is not None and lba >= self.gone_at:
            raise DeviceGone("fake: unplugged")
        if big and self.ctrl_c_at is not None and lba >= self.ctrl_c_at:
            raise KeyboardInterrupt
        if any(lba <= b < lba + count for b in self.bad):
            raise OSError(errno.EIO, "Input/output error")
        return self.data[lba * 512:(lba + count) * 512]


def run_pipeline(src: FakeSource, image: Path, chunk: int = 256, depth: int | None = None,
                 progress: object = None, table_sectors: tuple = ()) -> NativeReader:
    plan = build_plan(src.sector_count, 512, chunk)
    sink = NativeSink(str(image), sector_size=512, sector_count=src.sector_count,
                      chunk_sectors=chunk)
    writer = Writer(sink, MultiHash(("sha256",)), Progressed())
    done = acquire(src, sink, plan, writer=writer, depth=depth, progress=progress)
    from formats.manifest import Manifest

    sink.finalize(Manifest(512, src.sector_count, chunk, tuple(done.runs), tuple(done.checks),
                           chunk_check=CHUNK_CHECK, hashes=writer.hasher.hexdigests(),
                           unread=tuple((u.start_lba, u.count) for u in done.unread),
                           table_sectors=table_sectors))
    return NativeReader(str(image))


def test_bad_sectors_become_unread_and_zero(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2 * 2048   # 2048 sectors of non-uniform data
    src = FakeSource(data, bad={300, 301, 1500})
    with run_pipeline(src, tmp_path / "i.imgz") as reader:
        assert reader.manifest.unread == ((300, 2), (1500, 1))
        expect = bytearray(data)
        for lba in (300, 301, 1500):
            expect[lba * 512:(lba + 1) * 512] = bytes(512)
        assert reader.read(0, 2048) == bytes(expect)
        assert verify_image(reader).ok
        assert Extent(300, 2, Kind.UNREAD) in reader.extents()
        assert reader.hashes["sha256"] == hashlib.sha256(expect).hexdigest()


def test_without_salvage_the_failed_chunk_is_unread(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imager.salvage", None)  # import fails
    src = FakeSource(b"\1\2" * 256 * 1024, bad={700})
    with run_pipeline(src, tmp_path / "i.imgz") as reader:
        assert reader.manifest.unread == ((512, 256),)
        assert [c.extent.kind for c in reader.chunks()][2] is Kind.UNREAD


def test_memory_is_bounded_by_the_data_budget(tmp_path: Path) -> None:
    src = FakeSource(bytes(range(256)) * 2 * 64 * 256)   # every chunk DATA: a buffer each
    ahead = []

    def progress(done: int, total: int, label: str) -> None:
        written = done // (256 * 512)
        ahead.append(len(src.reads) - written)

    with run_pipeline(src, tmp_path / "i.imgz", depth=3, progress=progress) as reader:
        assert reader.read(0, src.sector_count) == src.data
    assert max(ahead) <= 3 + 1


def test_constant_chunks_run_ahead_at_most_lead_chunks(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # zero chunks travel as one shared buffer: the reader may run ahead through them (so the
    # hasher keeps busy), but only LEAD chunks, whatever the device size
    monkeypatch.setattr("imager.pipeline.LEAD", 8)
    src = FakeSource(bytes(64 * 256 * 512))
    ahead = []

    def progress(done: int, total: int, label: str) -> None:
        ahead.append(len(src.reads) - done // (256 * 512))

    with run_pipeline(src, tmp_path / "i.imgz", depth=3, progress=progress) as reader:
        assert [c.extent.kind for c in reader.chunks()] == [Kind.ZERO] * 64
    assert 3 + 1 < max(ahead) <= 8 + 1


def test_device_gone_propagates_and_stays_resumable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = small_source(tmp_path / "src.img", mib=40)
    image = tmp_path / "img.imgz"
    real = FakeSource(path.read_bytes(), gone_at=30 * 2048)
    monkeypatch.setattr("imager.acquisition._open", lambda req: real)
    req = AcquireRequest(source=str(path), image=str(image), chunk_bytes=MiB)
    with pytest.raises(DeviceGone):
        run_acquire(req)
    assert b'"n":16' in Path(str(image) + ".journal").read_bytes()  # batches committed
    real.gone_at = None
    real.ctrl_c_at = 35 * 2048
    with pytest.raises(Interrupted):
        run_acquire(req)
    real.ctrl_c_at = None
    run_acquire(req)
    assert zstd_d_sha256(image) == file_sha256(path)


def test_stdin_source(tmp_path: Path) -> None:
    path = small_source(tmp_path / "src.img", mib=3)
    image = tmp_path / "img.imgz"
    from tests.acquire_support import run_cli

    proc = run_cli("acquire", "-", str(image), "--quiet", "--size", str(path.stat().st_size),
                   stdin=path.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert zstd_d_sha256(image) == file_sha256(path)
    assert not Path(str(image) + ".journal").exists()
    help_text = run_cli("acquire", "--help").stdout.decode()
    assert "not resumable" in help_text.replace("\n", " ").replace("  ", " ")
    short = run_cli("acquire", "-", str(tmp_path / "x.imgz"), "--quiet", "--size", "1M",
                    stdin=b"\0" * 1000)
    assert short.returncode == 1 and b"stream ended" in short.stderr


def test_verify_checks_recorded_table_sectors(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(512 * 1024)
    good = run_pipeline(FakeSource(data), tmp_path / "a.imgz", table_sectors=((2, data[1024:2048]),))
    with good:
        assert verify_image(good).ok
    bad = run_pipeline(FakeSource(data), tmp_path / "b.imgz", table_sectors=((3, data[1024:2048]),))
    with bad:
        assert [b[:3] for b in verify_image(bad).bad_chunks] == [(-1, 3, 2)]


class CachedFakeSource(FakeSource):
    """A FakeSource that says re-reads are cheap (as a regular file does); ``changing``: every
    second read of a chunk returns other bytes (a source changing under the acquisition)."""

    reread_is_cheap = True

    def __init__(self, data: bytes, changing: bool = False) -> None:
        super().__init__(data)
        self.changing = changing

    def _read(self, lba: int, count: int) -> bytes:
        data = super()._read(lba, count)
        if self.changing and self.reads.count(lba) > 1:
            return bytes([data[0] ^ 1]) + data[1:]
        return data


def test_chunks_the_hasher_read_alone_are_read_again_and_land_exactly(tmp_path: Path) -> None:
    rng = random.Random(5)
    data = b"".join(rng.randbytes(256 * 512) if i % 3 else bytes(256 * 512) for i in range(40))
    src = CachedFakeSource(data)
    with run_pipeline(src, tmp_path / "i.imgz", depth=1) as reader:
        assert reader.read(0, src.sector_count) == data
        assert reader.hashes["sha256"] == hashlib.sha256(data).hexdigest()
        assert verify_image(reader).ok
    again = [lba for lba in set(src.reads) if src.reads.count(lba) > 1]
    assert again  # with a budget of one buffer, the workers re-read most DATA chunks
    assert all(data[lba * 512:(lba + 256) * 512] != bytes(256 * 512) for lba in again)


def test_a_source_that_changes_between_the_two_reads_is_refused(tmp_path: Path) -> None:
    data = random.Random(6).randbytes(40 * 256 * 512)
    src = CachedFakeSource(data, changing=True)
    with pytest.raises(SourceChanged, match=r"read differently the second time") as info:
        run_pipeline(src, tmp_path / "i.imgz", depth=1)
    lba = int(str(info.value).split("LBA ")[1].split("+")[0])
    assert src.reads.count(lba) == 2  # the chunk named is one that was read twice


def test_workers_stay_within_the_window_of_a_slow_writer(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import imager.pipeline as pl

    monkeypatch.setattr(pl, "WINDOW", 2)
    ahead_of_writer = []
    real_process, real_write = pl._Pool._process, NativeSink.write_encoded

    def spy(self: pl._Pool, item: object) -> object:
        ahead_of_writer.append(item.task.index - self.writer_at)  # type: ignore[attr-defined]
        return real_process(self, item)

    def slow(self: NativeSink, ext: Extent, frame: bytes) -> None:
        time.sleep(0.005)  # a writer stalled on its disk: finished chunks must not pile up
        real_write(self, ext, frame)

    monkeypatch.setattr(pl._Pool, "_process", spy)
    monkeypatch.setattr(NativeSink, "write_encoded", slow)
    data = random.Random(7).randbytes(40 * 256 * 512)
    with run_pipeline(CachedFakeSource(data), tmp_path / "i.imgz", depth=1) as reader:
        assert reader.read(0, 40 * 256) == data
    assert max(ahead_of_writer) == 2  # the window was reached, never passed


def test_chunks_with_excluded_parts_are_never_read_again_whole(tmp_path: Path) -> None:
    """A chunk holding both an acquired and an excluded range is not one plain read: its
    excluded bytes must stay out of the image (a whole-chunk re-read once put them in)."""
    data = random.Random(8).randbytes(20480 * 512)
    src = CachedFakeSource(data)
    plan = build_plan(20480, 512, 1536, TABLE, exclude=("user*",))  # chunks straddle userdata
    sink = NativeSink(str(tmp_path / "i.imgz"), sector_size=512, sector_count=20480,
                      chunk_sectors=1536)
    writer = Writer(sink, MultiHash(("sha256",)), Progressed())
    done = acquire(src, sink, plan, writer=writer, depth=1)
    expect = bytearray(data)
    for start, count in plan.not_acquired():
        expect[start * 512:(start + count) * 512] = bytes(count * 512)
    from formats.manifest import Manifest

    sink.finalize(Manifest(512, 20480, 1536, tuple(done.runs), tuple(done.checks),
                           chunk_check=CHUNK_CHECK, hashes=writer.hasher.hexdigests()))
    with NativeReader(str(tmp_path / "i.imgz")) as reader:
        assert reader.read(0, 20480) == bytes(expect)
        assert reader.hashes["sha256"] == hashlib.sha256(expect).hexdigest()
        assert verify_image(reader).ok
