"""The acquire pipeline: reader thread -> hasher thread + worker pool -> ordered writer.

The reader reads each chunk and classifies it (DATA/ZERO/FILL without per-byte Python loops);
the hasher thread feeds the whole-image hashes in chunk order; the workers digest (blake3) and
compress DATA chunks (hashlib, blake3 and zstandard release the GIL); the caller's thread
writes chunks in LBA order and commits a journal line per durable batch. Memory is bounded by
a budget of DATA buffers in flight, never by the device size. Exceptions travel to the caller.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from formats.extent import Extent, Kind, merge
from formats.manifest import KindRun, runs_append
from imager.errors import ImagerError, Interrupted, ReadError, SourceChanged
from imager.hashing import (
    CHUNK_CHECK,
    MultiHash,
    ParallelHash,
    chunk_digest,
    classify,
    constant,
    zeros,
)
from imager.journal import Journal, maybe_kill
from imager.plan import ChunkTask, Plan

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]
BUFFER_BUDGET = 32 << 20   # DATA chunk buffers in flight (read, not yet written and hashed)
WORKER_NICE = 5            # workers yield to the sequential whole-image hasher
WINDOW = 16                # chunks a worker may start ahead of the writer
LEAD = 512                 # chunks the reader may run ahead of the writer (constants are shared)


@dataclass
class ChunkResult:
    """A processed chunk on its way to the writer."""

    task: ChunkTask
    kind: Kind
    fill: int | None
    check: str | None
    data: bytes
    unread: list[Extent]
    encoded: bytes | None = None
    release: Callable[[], None] | None = None   # gives back the chunk's buffer budget


@dataclass
class Progressed:
    """What the writer has made durable-or-pending so far (the manifest's chunk part)."""

    next_index: int = 0
    runs: list[KindRun] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    unread: list[Extent] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: ChunkResult) -> None:
        runs_append(self.runs, result.task.index, result.kind, result.fill)
        if result.kind is Kind.DATA:
            self.checks.append(result.check or "")
        self.unread = merge(self.unread + result.unread) if result.unread else self.unread
        self.next_index = result.task.index + 1


def read_task(source: Any, task: ChunkTask, retries: int, policy: Any = None
              ) -> tuple[bytes, list[Extent]]:
    """The chunk's bytes (skipped and unreadable sectors as zeros) and its UNREAD extents."""
    ss = source.sector_size
    if task.reads == (task.extent,):
        return _read_range(source, task.extent, retries, policy)
    buf = bytearray(task.extent.count * ss)
    unread: list[Extent] = []
    for r in task.reads:
        data, bad = _read_range(source, r, retries, policy)
        off = (r.start_lba - task.extent.start_lba) * ss
        buf[off:off + len(data)] = data
        unread += bad
    return bytes(buf), unread


def _read_range(source: Any, r: Extent, retries: int, policy: Any) -> tuple[bytes, list[Extent]]:
    try:
        return source.read(r.start_lba, r.count), []
    except ReadError as err:
        if getattr(source, "resumable", True) is False:
            return _stream_short(source, r, err)
        log.warning("%s; salvaging sector by sector", err)
    try:
        from imager.salvage import salvage_read
    except ImportError:  # salvage not installed: the whole range is unread
        return zeros(r.count * source.sector_size), [Extent(r.start_lba, r.count, Kind.UNREAD)]
    opts = {"skip_policy": policy} if policy is not None else {}
    data, unread = salvage_read(source, r.start_lba, r.count, retries=retries, **opts)
    return data, list(unread)


def _stream_short(source: Any, r: Extent, err: ReadError) -> tuple[bytes, list[Extent]]:
    """A stream that ended early cannot be re-read: keep the whole sectors it delivered and
    record the rest of the range as UNREAD (never as data)."""
    partial = getattr(err, "partial", b"")
    got = len(partial) // source.sector_size
    data = partial[:got * source.sector_size] + zeros((r.count - got) * source.sector_size)
    return data, [Extent(r.start_lba + got, r.count - got, Kind.UNREAD)]


def classify_task(task: ChunkTask, data: bytes, unread: list[Extent]) -> tuple[Kind, int | None]:
    """The chunk's kind (and fill byte): UNREAD/NOT_ACQUIRED when nothing of it was read."""
    read_ok = sum(r.count for r in task.reads) - sum(u.count for u in unread)
    if read_ok <= 0:
        return (Kind.UNREAD if unread else Kind.NOT_ACQUIRED), None
    return classify(data)


def finish(task: ChunkTask, data: bytes, unread: list[Extent], kind: Kind, fill: int | None,
           check_algo: str, encode: Callable[[Extent, bytes | None, str | None], Any] | None
           ) -> ChunkResult:
    """Digest and (when the sink can) encode one classified chunk; runs in a worker thread."""
    check = chunk_digest(check_algo, data) if kind is Kind.DATA else None
    ext = Extent(task.extent.start_lba, task.extent.count, kind, fill)
    # the digest goes along so a sink that addresses chunks by it need not hash them again
    encoded = encode(ext, data if kind is Kind.DATA else None, check) if encode else None
    return ChunkResult(task, kind, fill, check, data, unread, encoded)


def process(task: ChunkTask, data: bytes, unread: list[Extent], check_algo: str,
            encode: Callable[[Extent, bytes | None, str | None], Any] | None) -> ChunkResult:
    """Classify, digest and encode one chunk (what the pool does across its threads)."""
    kind, fill = classify_task(task, data, unread)
    return finish(task, data, unread, kind, fill, check_algo, encode)


class _Lease:
    """A DATA chunk's buffer's share of a memory budget: ``release`` is called once all
    ``parties`` (the writer, each whole-image hasher) are done with the buffer."""

    __slots__ = ("_left", "_lock", "_release")

    def __init__(self, release: Callable[[], None], parties: int) -> None:
        self._release, self._left, self._lock = release, parties, threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._release()


@dataclass
class _Item:
    """One read chunk on its way to the workers (``data`` None: the worker reads it again)."""

    task: ChunkTask
    data: bytes | None
    unread: list[Extent]
    kind: Kind
    fill: int | None
    release: Callable[[], None] | None = None   # once written (the worker's copy)
    expect: str | None = None                   # check value of the hashed copy (re-read)


class _Pool:
    """The reader, the workers and the whole-image hasher; results handed over by index.

    The reader reads and classifies chunks in order and hands each to the hashers (one thread
    per whole-image algorithm, each fed in order: md5, sha1 and sha256 run side by side) and to
    the workers (blake3 + compression). The hashers' sequential pass over every byte is the
    floor of a hashed acquisition, so they must never wait for compression:

    - a constant chunk (ZERO, FILL, UNREAD, a hole of a sparse source file) travels as a shared
      buffer, so the reader may run up to ``lead`` chunks ahead of the writer through empty
      areas while the workers compress the data before them;
    - a DATA buffer is held until both written and hashed (``budget`` buffers at most). A
      source whose re-reads are cheap (a regular file: the page cache) does not wait for that
      budget: the hashers get the buffer (``hash_slots`` at most waiting for them) and a
      worker reads the chunk again later, its check value compared with the hashed copy's
      (a difference is SourceChanged, never a silent mismatch of image and hash);
    - a worker does not start a chunk more than ``WINDOW`` chunks ahead of the writer, so a
      writer waiting on fsync cannot make finished chunks pile up.

    Memory is bounded by those counts, never by the device size.
    """

    def __init__(self, source: Any, plan: Plan, start: int, *, workers: int, budget: int,
                 lead: int, retries: int, check_algo: str, encode: Any, hasher: MultiHash
                 ) -> None:
        self.source, self.plan, self.start = source, plan, start
        self.retries, self.check_algo, self.encode = retries, check_algo, encode
        self.hasher = hasher
        self.budget = threading.Semaphore(budget)
        self.reread = bool(getattr(source, "reread_is_cheap", False))
        self.hash_slots = threading.Semaphore(max(2, budget // 2))
        self.ahead = threading.Semaphore(lead)
        self.work: queue.Queue[Any] = queue.Queue()
        self.results: dict[int, ChunkResult] = {}
        self.writer_at = start  # the chunk the writer takes next
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.failed_at: int | None = None  # chunks before it are still delivered
        self.stop = threading.Event()
        self.hashes: ParallelHash | None = None  # started with the other threads
        self.threads = [threading.Thread(target=self._reader, name="imager-reader", daemon=True)]
        self.threads += [threading.Thread(target=self._worker, name=f"imager-worker-{i}",
                                          daemon=True) for i in range(workers)]
        self.policy = _skip_policy()

    def __enter__(self) -> _Pool:  # noqa: PYI034
        # unbounded queues: the ahead/budget/hash_slots semaphores bound what is queued
        self.hashes = ParallelHash(self.hasher, depth=0)
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for _ in self.threads:
            self.work.put(None)
        for _ in range(len(self.threads)):
            for sem in (self.ahead, self.budget, self.hash_slots):
                sem.release()
        for t in self.threads:
            t.join(timeout=30)
        if self.hashes is not None:
            self.hashes.abandon()  # after success: already closed, nothing left

    def _fail(self, err: BaseException, index: int | None) -> None:
        with self.cond:
            if self.error is None:
                self.error = err
            if index is not None and (self.failed_at is None or index < self.failed_at):
                self.failed_at = index
            self.cond.notify_all()

    def _next(self, task: ChunkTask, known_zero: Any
              ) -> tuple[_Item, bytes, Callable[[], None] | None] | None:
        """Read and classify one chunk: its work item, the bytes to hash and what the hasher
        releases once they are hashed."""
        nbytes = task.extent.count * self.source.sector_size
        if not task.reads:
            return _Item(task, zeros(nbytes), [], Kind.NOT_ACQUIRED, None), zeros(nbytes), None
        if known_zero is not None and task.reads == (task.extent,) \
                and known_zero(task.extent.start_lba, task.extent.count):
            return _Item(task, zeros(nbytes), [], Kind.ZERO, None), zeros(nbytes), None  # hole
        held = self.hash_slots if self.reread else self.budget
        held.acquire()
        if self.stop.is_set():
            return None
        data, unread = read_task(self.source, task, self.retries, self.policy)
        kind, fill = classify_task(task, data, unread)
        if kind is not Kind.DATA:
            held.release()  # the same bytes as a shared constant buffer
            same = constant(nbytes, fill)
            return _Item(task, same, unread, kind, fill), same, None
        hashers = len(self.hasher.names)
        if not self.reread:
            lease = _Lease(self.budget.release, 1 + hashers)
            return _Item(task, data, unread, kind, fill, lease.done), data, lease.done
        hashed = _Lease(held.release, hashers).done
        if unread or task.reads != (task.extent,):
            # never read twice what failed once, and a chunk with skipped (not acquired) parts
            # is not one plain read: wait for room instead
            self.budget.acquire()
        elif not self.budget.acquire(blocking=False):
            expect = chunk_digest(self.check_algo, data)
            return _Item(task, None, [], kind, fill, None, expect), data, hashed
        return _Item(task, data, unread, kind, fill, self.budget.release), data, hashed

    def _reader(self) -> None:
        index = self.start
        known_zero = getattr(self.source, "known_zero", None)
        try:
            for task in self.plan.tasks(self.start):
                index = task.index
                self.ahead.acquire()
                if self.stop.is_set():
                    return
                got = self._next(task, known_zero)
                if got is None:
                    return
                item, data, hashed = got
                assert self.hashes is not None
                self.hashes.update(data, hashed)
                self.work.put(item)
        except BaseException as err:  # noqa: BLE001 -- travels to the writer, re-raised there
            self._fail(err, index)

    def finish_hash(self) -> None:
        """Wait until every chunk handed to the hashers is hashed."""
        assert self.hashes is not None
        self.hashes.close()

    def _worker(self) -> None:
        _yield_to_hasher()
        while not self.stop.is_set():
            item = self.work.get()
            if item is None:
                return
            if not self._wait_for_window(item.task.index):
                return
            try:
                result = self._process(item)
            except BaseException as err:  # noqa: BLE001 -- travels to the writer, re-raised there
                self._fail(err, item.task.index)
                return
            with self.cond:
                self.results[result.task.index] = result
                self.cond.notify_all()

    def _wait_for_window(self, index: int) -> bool:
        """Hold a chunk more than WINDOW ahead of the writer until the writer gets closer.

        Never deadlocks: workers take chunks in order, so the chunk the writer waits for is
        always held by a worker that is inside the window (or already finished). False when
        the pool is stopping.
        """
        with self.cond:
            while index > self.writer_at + WINDOW:
                if self.stop.is_set():
                    return False
                self.cond.wait(0.5)
        return True

    def _process(self, item: _Item) -> ChunkResult:
        data = item.data
        if data is None:  # the hasher had the only copy: read it again, it must be the same
            ext = item.task.extent
            try:
                data = self.source.read(ext.start_lba, ext.count)
            except ReadError as err:
                raise SourceChanged(f"LBA {ext.start_lba}+{ext.count} read once, then failed "
                                    f"when read again ({err})") from err
        result = finish(item.task, data, item.unread, item.kind, item.fill, self.check_algo,
                        self.encode)
        if item.expect is not None and result.check != item.expect:
            ext = item.task.extent
            raise SourceChanged(f"LBA {ext.start_lba}+{ext.count} read differently the second "
                                "time: the source is changing under the acquisition")
        if result.encoded is not None:
            result.data = b""  # the writer needs only the encoded form; hashed already
        result.release = item.release
        return result

    def take(self, index: int) -> ChunkResult:
        """Wait for chunk ``index``; re-raise a reader/worker failure.

        Chunks read before the failure are still handed out, so the image keeps everything
        that was read before a device vanished.
        """
        with self.cond:
            self.writer_at = index
            self.cond.notify_all()
            while index not in self.results:
                if self.error is not None and (self.failed_at is None
                                               or index >= self.failed_at):
                    raise self.error
                self.cond.wait(0.5)
            result = self.results.pop(index)
        self.ahead.release()
        return result


def _yield_to_hasher() -> None:
    """Lower this worker thread's priority a little (Linux: per-thread nice).

    The whole-image hash is sequential and the slowest stage: with two workers and the hasher
    runnable on two cores, fair scheduling gave the hasher 2/3 of a core and made it the
    critical path (measured, docs/BENCHMARKS.md). Niced workers take what the hasher leaves.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: only a hint
        pass


def _skip_policy() -> Any:
    try:
        from imager.salvage import SkipPolicy
    except ImportError:
        return None
    return SkipPolicy()


@dataclass
class Writer:
    """The ordered writer's state: sink, hashes, journal batching."""

    sink: Any
    hasher: MultiHash
    done: Progressed
    journal: Journal | None = None
    batch_chunks: int = 16
    batch_seconds: float = 2.0
    _pending: list[ChunkResult] = field(default_factory=list)
    _last: float = field(default_factory=time.monotonic)
    _started: float = field(default_factory=time.monotonic)

    def put(self, result: ChunkResult) -> None:
        """Write one chunk, hash it, and commit a batch when one is due."""
        ext = Extent(result.task.extent.start_lba, result.task.extent.count, result.kind,
                     result.fill)
        # recorded before the write: commit() keeps only what the sink says is complete,
        # so a Ctrl-C landing anywhere in here cannot desynchronise image and journal
        self._pending.append(result)
        if result.encoded is not None:
            self.sink.write_encoded(ext, result.encoded)
        else:
            self.sink.write(ext, result.data if result.kind is Kind.DATA else None)
        maybe_kill("chunk", result.task.index)
        result.data, result.encoded = b"", None  # the batch keeps records, not buffers
        if result.release is not None:
            result.release()
            result.release = None
        if len(self._pending) >= self.batch_chunks \
                or time.monotonic() - self._last >= self.batch_seconds:
            self.commit()

    def commit(self) -> None:
        """Make the written chunks durable, then record them in the journal."""
        state = self.sink.checkpoint()
        complete = state.get("chunks", self.done.next_index + len(self._pending))
        batch = self._pending[:max(complete - self.done.next_index, 0)]
        maybe_kill("journal", self.done.next_index + len(batch))
        for r in batch:
            self.done.add(r)
        if self.journal is not None and batch:
            self.journal.commit({"n": self.done.next_index, "sink": state, "chunks": [
                [r.kind.value, r.fill, r.check] for r in batch],
                "unread": [[u.start_lba, u.count] for r in batch for u in r.unread],
                "t": round(self.done.seconds + time.monotonic() - self._started, 3)})
        del self._pending[:len(batch)]  # not yet durable per the sink: kept for the next commit
        self._last = time.monotonic()


def acquire(source: Any, sink: Any, plan: Plan, *, progress: Progress | None = None,
            writer: Writer, workers: int = 2, depth: int | None = None, retries: int = 1,
            check_algo: str = CHUNK_CHECK) -> Progressed:
    """Stream every chunk of ``plan`` from ``source`` into ``sink`` in LBA order.

    ``writer`` carries the hash state, the chunks already done (resume) and the journal; the
    caller finalizes (pipeline.session builds the manifest). On any failure or Ctrl-C the
    chunks written so far are committed first, so the image stays resumable (the hash state
    is then not meaningful: a resume rebuilds it from the image). ``depth``: DATA buffers in
    flight (default: 64 MiB worth).

    Raises:
        Interrupted: KeyboardInterrupt (resumable). Errors of the source/sink propagate.
    """
    start = writer.done.next_index
    total = plan.sector_count * plan.sector_size
    encode = getattr(sink, "encode", None)
    chunk_bytes = plan.chunk_sectors * plan.sector_size
    budget = depth or max(2 * workers + 2, BUFFER_BUDGET // max(chunk_bytes, 1))
    pool = _Pool(source, plan, start, workers=workers, budget=budget, lead=max(LEAD, budget),
                 retries=retries, check_algo=check_algo, encode=encode, hasher=writer.hasher)
    began = time.monotonic()
    try:
        with pool:
            for index in range(start, plan.chunk_count):
                result = pool.take(index)
                writer.put(result)
                if progress:
                    progress(result.task.extent.end_lba * plan.sector_size, total,
                             result.task.label)
            pool.finish_hash()
    except KeyboardInterrupt as err:
        _safe_commit(writer)
        raise Interrupted(f"stopped with {writer.done.next_index} of "
                          f"{plan.chunk_count} chunks done") from err
    except BaseException:
        _safe_commit(writer)
        raise
    finally:
        writer.done.seconds += time.monotonic() - began
    writer.commit()
    return writer.done


def _safe_commit(writer: Writer) -> None:
    try:
        writer.commit()
    except (OSError, ImagerError) as err:
        log.error("could not record progress before stopping: %s", err)
