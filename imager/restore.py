"""The writer: stream an image back onto a Target, verified before and after each write.

Each chunk is checked against the image's check value (``reader.read_chunk``) before any of its
bytes are written; a bad chunk stops the restore with everything before it written and nothing
from it on. Written ranges are flushed, read back and compared per batch; a batch is journalled
only once it is durable and verified, so a re-run continues where the last one stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from formats.errors import ChecksumMismatch
from imager.errors import Interrupted, NotSupported, UsageError, VerificationFailed
from imager.hashing import fast_digest
from imager.hashing import zeros as zero_bytes  # (restore() has a `zeros` mode argument)
from imager.migrate import apply_migration, compute_relocation
from imager.restore_journal import RestoreJournal
from imager.restore_plan import ZEROS_MODES, RestorePlan, Step

log = logging.getLogger(__name__)

# flush + read back + journal this often. Each flush is an fsync and a file-system journal
# commit that stalls the writer (4 GiB phone: 3.7 s at 32 MiB, 2.7 s at 128 without read-back);
# a batch keeps a 32-byte blake3 digest per written step, not its bytes, so size costs no memory
BATCH_BYTES = 128 << 20
PREFETCH = 4             # chunks read and verified ahead of the writer
WRITE_RETRIES = 3        # rewrites of a range that reads back different


@dataclass
class RestoreResult:
    """What a restore did (counts are plan steps; a step is one chunk or a slice of one)."""

    steps_total: int = 0
    steps_written: int = 0
    steps_zeroed: int = 0         # made zero by zero_out/discard instead of writing
    steps_skipped: int = 0        # ZERO under --zeros skip, UNREAD/NOT_ACQUIRED
    steps_unchanged: int = 0      # --only-changed: target already held the bytes
    bytes_written: int = 0
    bytes_zeroed: int = 0
    bytes_skipped: int = 0
    bytes_unchanged: int = 0
    rewrites: int = 0             # verification retries that fixed a range
    resumed_at_step: int = 0
    verified: bool = False
    gpt_migrated: bool = False
    grown_partition: tuple[int, int, int] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int], None]


def restore(reader: Any, target: Any, plan: RestorePlan, *, zeros: str = "write",
            verify: bool = True, only_changed: bool = False,
            progress: ProgressFn | None = None,
            journal_path: str | os.PathLike[str] | None = None,
            batch_bytes: int | None = None) -> RestoreResult:
    """Write ``plan`` from ``reader`` onto ``target``.

    Args:
        zeros: ``write`` (target reads back exactly like the image), ``discard`` (zero_out or a
            zero-guaranteeing discard, else writing) or ``skip`` (ZERO chunks left untouched).
        verify: read every written range back and compare it with what was written.
        only_changed: read the target first and write only steps whose bytes differ.
        progress: called with the number of bytes each finished step covered.
        journal_path: resume journal; a re-run with the same plan continues after its last
            committed step. Removed when the restore completes.
        batch_bytes: flush, read back and journal after about this many bytes (default
            BATCH_BYTES).
    Raises:
        VerificationFailed: an image chunk fails its check (nothing from it on was written) or
            a range still reads back different after retries.
        Interrupted: Ctrl-C; the journal holds the resumable state.
    """
    if zeros not in ZEROS_MODES:
        raise UsageError(f"--zeros {zeros!r}: expected one of {', '.join(ZEROS_MODES)}")
    started = time.monotonic()
    if plan.migrate is not None:
        compute_relocation(reader, plan.migrate)  # a bad image GPT fails before any write
    journal = None
    if journal_path is not None:
        journal = RestoreJournal(journal_path, plan_fingerprint(reader, target, plan, zeros),
                                 {"target": target.identity.path, "steps": len(plan.steps)})
    if hasattr(target, "direct_writes"):
        target.direct_writes = True  # no page-cache copy of gigabytes that are not read again
    writer = _Writer(target, plan, zeros, verify, only_changed, journal,
                     batch_bytes or BATCH_BYTES, _fetcher(reader))
    writer.result.resumed_at_step = journal.committed if journal else 0
    try:
        writer.run(reader, progress)
    except KeyboardInterrupt as err:
        where = journal.path if journal else "nowhere (no journal)"
        raise Interrupted(f"restore stopped after step {writer.committed} of "
                          f"{len(plan.steps)}; progress saved in {where}",
                          "re-run the same restore command; it continues from the journal"
                          ) from err
    if plan.migrate is not None:
        rel = apply_migration(reader, target, plan.migrate, verify=verify)
        writer.result.gpt_migrated, writer.result.grown_partition = True, rel.grown
    if journal is not None:
        journal.finish()
    writer.result.verified = verify
    writer.result.seconds = round(time.monotonic() - started, 3)
    return writer.result


def plan_fingerprint(reader: Any, target: Any, plan: RestorePlan, zeros: str) -> str:
    """A digest of everything that decides the target's final bytes (resume only if equal)."""
    h = hashlib.sha256()
    h.update(repr((reader.sector_size, reader.sector_count, reader.chunk_sectors, zeros,
                   plan.write_unread, plan.migrate, target.identity.path,
                   target.sector_count, target.identity.serial)).encode())
    path = getattr(reader, "path", None)
    if path and os.path.isfile(path):
        st = os.stat(path)
        h.update(repr((os.path.abspath(path), st.st_size, st.st_mtime_ns)).encode())
    for s in plan.steps:
        h.update(repr((s.chunk.index, s.chunk.extent, s.chunk.check, s.offset, s.count,
                       s.target_lba)).encode())
    return h.hexdigest()


class CorruptImageChunk(VerificationFailed):
    """An image chunk failed its check; the restore stopped before writing any of it."""

    def __init__(self, step: Step, err: ChecksumMismatch) -> None:
        super().__init__(f"image chunk {step.chunk.index} (image LBA "
                         f"{step.chunk.extent.start_lba}+{step.chunk.extent.count}) is corrupt: "
                         f"{err}; restore stopped before writing it: target LBA "
                         f"{step.target_lba} and everything after it were not written")
        self.chunk, self.target_lba = step.chunk.index, step.target_lba


class _Writer:
    """The ordered write loop: one batch at a time, journalled once durable and verified."""

    def __init__(self, target: Any, plan: RestorePlan, zeros: str, verify: bool,
                 only_changed: bool, journal: RestoreJournal | None,
                 batch_limit: int, fetch: Callable[[Any], bytes]) -> None:
        self.target, self.plan, self.zeros = target, plan, zeros
        self.only_changed = only_changed
        self.ss = target.sector_size
        self.fetch = fetch
        self.blake3_checks = False
        self.result = RestoreResult(steps_total=len(plan.steps))
        self.verifier = _Verifier(target, verify, journal, self.result, self._step_bytes)
        self.batch: list[tuple[Step, bytes | None]] = []  # written steps awaiting read-back
        self.batch_bytes = 0
        self.batch_limit = batch_limit
        self.next_step = self.committed

    @property
    def committed(self) -> int:
        """Steps durable, verified and journalled."""
        return self.verifier.committed

    def run(self, reader: Any, progress: ProgressFn | None) -> None:
        manifest = getattr(reader, "manifest", None)
        self.blake3_checks = getattr(manifest, "chunk_check", None) == "blake3"
        steps = self.plan.steps
        todo = [(i, s, self.plan.action(s, self.zeros)) for i, s in
                enumerate(steps) if i >= self.committed]
        skipped_bytes = sum(s.count for s in steps[:self.committed]) * self.ss
        if progress and skipped_bytes:
            progress(skipped_bytes)
        try:
            for i, step, action, data in _prefetch(reader, todo, self.fetch):
                self._do(step, action, data)
                self.next_step = i + 1
                if progress:
                    progress(step.count * self.ss)
                if self.batch_bytes >= self.batch_limit:
                    self._commit()
            self._commit()
            self.verifier.wait()
        except CorruptImageChunk:
            self._commit()  # what came before the bad chunk is good: keep it
            self.verifier.wait()
            raise
        except KeyboardInterrupt:
            self._commit_safe()
            raise
        finally:
            self.verifier.close()

    def _do(self, step: Step, action: str, data: bytes | None) -> None:
        r, nbytes = self.result, step.count * self.ss
        written = False
        if action == "skip":
            r.steps_skipped, r.bytes_skipped = r.steps_skipped + 1, r.bytes_skipped + nbytes
        elif self.only_changed and self._unchanged(step, data):
            r.steps_unchanged, r.bytes_unchanged = r.steps_unchanged + 1, \
                r.bytes_unchanged + nbytes
        elif action == "zero" and self._zero_fast(step):
            r.steps_zeroed, r.bytes_zeroed = r.steps_zeroed + 1, r.bytes_zeroed + nbytes
            written = True
        else:
            self.target.write(step.target_lba, data if data is not None else bytes(nbytes))
            r.steps_written, r.bytes_written = r.steps_written + 1, r.bytes_written + nbytes
            written = True
        # b"" marks "nothing written, nothing to read back"; None means "zeros written" (or,
        # without read-back, "written"); else the blake3 digest of the bytes written
        kept = self._digest(step, data) if self.verifier.verify and data is not None else None
        self.batch.append((step, kept if written else b""))
        self.batch_bytes += nbytes

    def _digest(self, step: Step, data: bytes) -> bytes:
        """blake3 of the bytes written: the image's own check value when it is one (the
        reader verified the chunk against it before handing it over), else computed."""
        whole = (step.offset, step.count) == (0, step.chunk.extent.count)
        if whole and self.blake3_checks and step.chunk.check:
            return bytes.fromhex(step.chunk.check)
        return fast_digest(data)

    def _step_bytes(self, step: Step) -> bytes:
        """The image bytes of a step, fetched again (a read-back that differs is rewritten)."""
        data = self.fetch(step.chunk)
        if (step.offset, step.count) == (0, step.chunk.extent.count):
            return data
        return data[step.offset * self.ss:(step.offset + step.count) * self.ss]

    def _unchanged(self, step: Step, data: bytes | None) -> bool:
        current = self.target.read(step.target_lba, step.count)
        if data is None:  # a zero step: compare without building a zero buffer per call
            return current.count(0) == len(current)
        return current == data

    def _zero_fast(self, step: Step) -> bool:
        """zero_out, else a discard that guarantees zeros; False = caller writes zeros."""
        try:
            self.target.zero_out(step.target_lba, step.count)
            return True
        except (NotSupported, OSError) as err:
            log.debug("zero_out LBA %d+%d: %s", step.target_lba, step.count, err)
        try:
            return bool(self.target.discard(step.target_lba, step.count))
        except (NotSupported, OSError) as err:
            log.debug("discard LBA %d+%d: %s", step.target_lba, step.count, err)
            return False

    def _commit(self) -> None:
        """Flush the batch, read it back and journal it (overlapping the next batch)."""
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.verifier.submit(batch, self.next_step)

    def _commit_safe(self) -> None:
        """On Ctrl-C: commit what is done, but never let a second error hide the first."""
        try:
            self._commit()
            self.verifier.wait()
        except (OSError, VerificationFailed) as err:
            log.warning("could not commit the last batch: %s", err)


class _Verifier:
    """Reads flushed batches back, rewrites what differs, then journals them.

    For a FileTarget this runs in its own thread, so flushing and reading batch N back overlap
    writing batch N+1 (fsync, and pread/pwrite on distinct ranges of one fd, are safe); other
    targets (USB) are not promised to be thread-safe and are flushed and verified inline. At
    most one batch is pending: its failure stops the writer before the batch after next.
    """

    def __init__(self, target: Any, verify: bool, journal: RestoreJournal | None,
                 result: RestoreResult, step_bytes: Callable[[Step], bytes]) -> None:
        from imager.devices.file import FileTarget

        self.target, self.verify, self.journal, self.result = target, verify, journal, result
        self.step_bytes = step_bytes
        self.ss = target.sector_size
        self.committed = journal.committed if journal else 0
        overlap = isinstance(target, FileTarget)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="restore-verify") \
            if overlap else None
        self.pending: Future[None] | None = None

    def submit(self, batch: list[tuple[Step, bytes | None]], steps_done: int) -> None:
        self.wait()
        if self.pool is None:
            self._finish(batch, steps_done)
        else:
            self.pending = self.pool.submit(self._finish, batch, steps_done)

    def wait(self) -> None:
        """Let the pending batch finish; re-raise its VerificationFailed."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _finish(self, batch: list[tuple[Step, bytes | None]], steps_done: int) -> None:
        self.target.flush()  # durable before it is read back or journalled
        if self.verify:
            self._read_back(batch)
        if self.journal is not None and steps_done > self.committed:
            self.journal.commit(steps_done)
        self.committed = max(self.committed, steps_done)

    def _read_back(self, batch: list[tuple[Step, bytes | None]]) -> None:
        is_hole = getattr(self.target, "is_hole", None)
        for step, digest in batch:
            if digest == b"":
                continue  # skipped: nothing was written
            if digest is None and is_hole is not None and is_hole(step.target_lba, step.count):
                continue  # zeroed by punching a hole: the file system guarantees zeros
            self._check_range(step, digest)

    def _from_medium(self, lba: int, count: int) -> bytes:
        """Read a flushed range back from the medium, not from a cache, where the target can."""
        direct = getattr(self.target, "read_from_medium", None)
        if direct is not None:
            return direct(lba, count)
        drop = getattr(self.target, "drop_cache", None)
        if drop is not None:
            drop(lba, count)
        return self.target.read(lba, count)

    def _check_range(self, step: Step, digest: bytes | None) -> None:
        """Read the range back from the medium: equal to what was written (its digest, or zeros
        for ``None``)? Else rewrite it (the bytes fetched from the image again) and re-check."""
        back = self._from_medium(step.target_lba, step.count)
        if (fast_digest(back) == digest) if digest is not None else \
                back == zero_bytes(len(back)):
            return
        expected = self.step_bytes(step) if digest is not None else zero_bytes(len(back))
        for attempt in range(1, WRITE_RETRIES + 1):
            log.warning("LBA %d+%d read back different; rewriting (attempt %d)",
                        step.target_lba, step.count, attempt)
            self.target.write(step.target_lba, expected)
            self.target.flush()
            back = self._from_medium(step.target_lba, step.count)
            if back == expected:
                self.result.rewrites += attempt
                return
        off = next(i for i, (a, b) in enumerate(zip(back, expected)) if a != b)
        lba = step.target_lba + off // self.ss
        raise VerificationFailed(
            f"{self.target.identity.path}: image chunk {step.chunk.index} written at LBA "
            f"{step.target_lba}+{step.count} reads back different after {WRITE_RETRIES + 1} "
            f"writes (first difference at LBA {lba}: expected {expected[off]:#04x}, got "
            f"{back[off]:#04x})")


def _fetcher(reader: Any) -> Callable[[Any], bytes]:
    """``reader.read_chunk`` made safe to call from the prefetch and read-back threads: readers
    that say so (NativeReader: pread + a decompressor per thread) as they are, others under a
    lock (readers need not be thread-safe)."""
    if getattr(reader, "concurrent_read_chunk", False):
        return reader.read_chunk
    lock = threading.Lock()

    def read_chunk(chunk: Any) -> bytes:
        with lock:
            return reader.read_chunk(chunk)

    return read_chunk


def _prefetch(reader: Any, todo: list[tuple[int, Step, str]], fetch: Callable[[Any], bytes]
              ) -> Iterator[tuple[int, Step, str, bytes | None]]:
    """Yield (index, step, action, data) in order, reading and verifying chunks ahead.

    One worker thread owns the reader (readers need not be thread-safe; two for a reader whose
    ``concurrent_read_chunk`` is true); a corrupt chunk surfaces exactly when the writer
    reaches it, so every step before it is written and none after it.
    """
    ss = reader.sector_size
    futures: dict[int, Future[bytes]] = {}  # todo position -> its chunk's bytes

    def needs_data(pos: int) -> bool:
        # ZERO chunks too: the reader checks (and synthesises) them like any other chunk
        return todo[pos][2] == "write"

    # readers that say so (NativeReader: pread + a decompressor per thread) decompress and
    # check two chunks at once; others are used from one thread only
    workers = 2 if getattr(reader, "concurrent_read_chunk", False) else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore-read") as pool:
        ahead = 0
        for pos, (i, step, action) in enumerate(todo):
            while ahead < min(len(todo), pos + PREFETCH + 1):
                if needs_data(ahead):
                    prev = futures.get(ahead - 1)
                    same = prev is not None and todo[ahead - 1][1].chunk == todo[ahead][1].chunk
                    futures[ahead] = prev if same else pool.submit(fetch, todo[ahead][1].chunk)
                ahead += 1
            data = None
            fut = futures.pop(pos, None)
            if fut is not None:
                try:
                    chunk_bytes = fut.result()
                except ChecksumMismatch as err:
                    for rest in futures.values():
                        rest.cancel()
                    raise CorruptImageChunk(step, err) from err
                whole = (step.offset, step.count) == (0, step.chunk.extent.count)
                data = chunk_bytes if whole else \
                    chunk_bytes[step.offset * ss:(step.offset + step.count) * ss]
            yield i, step, action, data
