"""ddrescue-style rescue of a failing source into a sparse raw file plus a GNU mapfile.

Phases, each acting only on blocks in its own state (so a rerun after a crash just carries on):

1. copying (``?``): pass 1 reads non-tried areas in clusters and on an error marks the cluster
   non-trimmed (``*``) and skips ahead (the skip doubles on each consecutive error, as ddrescue's
   ``--skip-size``); pass 2 does the same in the other direction; pass 3 sweeps without skipping;
2. trimming (``*``): sector by sector from the leading edge to the first bad sector, then from
   the trailing edge back; the untouched middle becomes non-scraped (``/``);
3. scraping (``/``): every sector alone;
4. ``retries`` passes over bad sectors (``-``), direction alternating.

Good data is written to OUT and marked ``+``. OUT is fsynced before each mapfile save. When the
source vanishes (DeviceGone, or an EIO storm: a run of failures and a known-good sector fails
too) the failure marks of the storm are undone, the state is saved, and the rescue either
waits for the same device to come back or stops with Interrupted (exit 130).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from formats.mapfile import Status
from imager.devices.base import Source
from imager.errors import DeviceError, DeviceGone, Interrupted, ReadError
from imager.rescue_map import RescueMap

log = logging.getLogger(__name__)
PHASE_NAMES = {"?": "copying", "*": "trimming", "/": "scraping", "-": "retrying", "+": "finished"}


@dataclass
class RescueOptions:
    """Knobs of a rescue run (sizes in bytes)."""

    block_size: int = 64 * 1024       # cluster read in the copying passes
    retries: int = 0
    reverse: bool = False
    trim: bool = True
    scrape: bool = True
    skip_size: int = 64 * 1024        # first skip after an error; 0 disables skipping
    slow_seconds: float = 5.0         # a cluster read slower than this skips ahead too
    storm_errors: int = 8             # consecutive failures before probing a known-good sector
    wait_reconnect: float = 0.0       # seconds to wait for a vanished source; 0 = stop
    poll_seconds: float = 0.25
    save_interval: float = 5.0
    command: str = ""                 # written into the mapfile header and the resume hint


@dataclass(frozen=True)
class RescueProgress:
    """What a progress callback gets after each read."""

    phase: str
    pass_no: int
    pos: int
    rescued_bytes: int
    bad_bytes: int
    non_tried_bytes: int
    size_bytes: int
    reads: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.reads if self.reads else 0.0

    @property
    def phase_name(self) -> str:
        return PHASE_NAMES.get(self.phase, self.phase)


class Rescuer:
    """One rescue run; ``run()`` returns the final per-status byte totals."""

    def __init__(self, source: Source, out_path: Path, map_path: Path, options: RescueOptions,
                 progress: Callable[[RescueProgress], None] | None = None,
                 reopen: Callable[[], Source] | None = None) -> None:
        self.source, self.opts, self.progress, self.reopen = source, options, progress, reopen
        self._original = source
        self.ss = source.sector_size
        self.size = source.sector_count * self.ss
        self.identity = source.identity
        self.map_path = map_path
        self.map = RescueMap.load(map_path, self.size, self.ss)
        self.out_fd = _open_output(out_path, self.size)
        self.reads = self.errors = self._run_fails = 0
        self.last_good: int | None = self.map.any_finished_lba()
        self._saved_at = time.monotonic()
        self._reported_at = 0.0

    def close(self) -> None:
        if self.source is not self._original:  # a reopened source is ours to close
            self.source.close()
        if self.out_fd >= 0:
            os.close(self.out_fd)
            self.out_fd = -1

    def run(self) -> dict[Status, int]:
        """Run every phase to the end (or raise Interrupted with the state saved)."""
        try:
            while True:
                try:
                    self._phases()
                    if self._run_fails:  # ended on failures: were they the device vanishing?
                        self._probe(self.map.pos // self.ss)
                    break
                except DeviceGone as err:
                    reverted = self.map.undo_failures()
                    log.warning("%s (%d failure marks reverted)", err, reverted)
                    self.save()
                    if not self._wait_return(err):
                        raise Interrupted(f"source vanished: {err}; state saved in "
                                          f"{self.map_path}", self._hint()) from err
            self.map.phase, self.map.pass_no, self.map.pos = "+", 1, 0
            self.save()
            self._tick(force=True)
            return self.map.totals()
        except KeyboardInterrupt:
            self.save()
            raise Interrupted(f"stopped; state saved in {self.map_path}", self._hint()) from None

    def _hint(self) -> str:
        return self.opts.command or f"rerun with the same --mapfile {self.map_path}"

    def _phases(self) -> None:
        first_retry = self.map.pass_no if self.map.phase == "-" else 1
        self._copy_passes()
        if self.opts.trim:
            self._set_phase("*", 1)
            for start, end in self.map.areas(Status.NON_TRIMMED):
                self._trim(start // self.ss, end // self.ss)
        if self.opts.scrape:
            self._set_phase("/", 1)
            for start, end in self.map.areas(Status.NON_SCRAPED, self.opts.reverse):
                self._sectors(start // self.ss, end // self.ss, self.opts.reverse)
        for pass_no in range(first_retry, self.opts.retries + 1):
            reverse = self.opts.reverse != (pass_no % 2 == 0)
            self._set_phase("-", pass_no)
            for start, end in self.map.areas(Status.BAD_SECTOR, reverse):
                self._sectors(start // self.ss, end // self.ss, reverse)

    def _copy_passes(self) -> None:
        for pass_no, skipping in ((1, True), (2, True), (3, False)):
            if not self.map.areas(Status.NON_TRIED):
                return
            reverse = self.opts.reverse != (pass_no == 2)
            self._set_phase("?", pass_no)
            for start, end in self.map.areas(Status.NON_TRIED, reverse):
                self._copy_area(start // self.ss, end // self.ss, reverse,
                                skipping and self.opts.skip_size > 0)

    def _set_phase(self, phase: str, pass_no: int) -> None:
        if (self.map.phase, self.map.pass_no) != (phase, pass_no):
            self.map.phase, self.map.pass_no = phase, pass_no
            self.save()
            self._reported_at = 0.0  # the first read of a phase is always reported

    def _copy_area(self, first: int, end: int, reverse: bool, skipping: bool) -> None:
        cluster = max(1, self.opts.block_size // self.ss)
        skip = 0
        pos = end if reverse else first
        while first < pos if reverse else pos < end:
            if reverse:
                lba = max(first, (pos - 1) // cluster * cluster)
                count = pos - lba
            else:
                lba, count = pos, min(end, (pos // cluster + 1) * cluster) - pos
            start = time.monotonic()
            ok = self._read(lba, count, Status.NON_TRIMMED)
            slow = time.monotonic() - start > self.opts.slow_seconds
            if ok and not slow:
                skip = 0
            elif skipping:
                skip = min(max(skip * 2, self.opts.skip_size // self.ss), self._max_skip())
            step = count + (skip if not ok or slow else 0)
            pos = pos - step if reverse else pos + step

    def _max_skip(self) -> int:
        # ddrescue: 1% of the input size, at least the first skip, at most 1 GiB
        limit = max(self.size // 100, self.opts.skip_size, self.opts.block_size)
        return min(limit, 1 << 30) // self.ss

    def _trim(self, first: int, end: int) -> None:
        lba = first
        while lba < end and self._read(lba, 1, Status.BAD_SECTOR):
            lba += 1
        if lba >= end - 1:
            return
        last = end - 1
        while last > lba and self._read(last, 1, Status.BAD_SECTOR):
            last -= 1
        if last - lba > 1:
            self.map.mark((lba + 1) * self.ss, (last - lba - 1) * self.ss, Status.NON_SCRAPED)

    def _sectors(self, first: int, end: int, reverse: bool) -> None:
        for lba in range(end - 1, first - 1, -1) if reverse else range(first, end):
            self._read(lba, 1, Status.BAD_SECTOR)

    def _read(self, lba: int, count: int, fail_status: Status) -> bool:
        """Read, write what came, mark the map; False on a medium error."""
        self.map.pos = lba * self.ss
        self.reads += 1
        try:
            data = self.source.read(lba, count)
        except ReadError as err:
            log.debug("LBA %d+%d: %s", lba, count, err.reason)
            self.errors += 1
            self.map.mark(lba * self.ss, count * self.ss, fail_status)
            self._run_fails += 1
            if self._run_fails >= self.opts.storm_errors:
                self._probe(lba)
            self._tick()
            return False
        _write_out(self.out_fd, lba * self.ss, data)
        self.map.mark(lba * self.ss, count * self.ss, Status.FINISHED)
        self.map.commit_failures()
        self._run_fails, self.last_good = 0, lba
        self._tick()
        return True

    def _probe(self, lba: int) -> None:
        """After a run of failures: if a known-good sector fails too, the device is gone."""
        self._run_fails = 0
        if self.last_good is None:
            return
        try:
            self.source.read(self.last_good, 1)
        except ReadError as err:
            raise DeviceGone(f"{self.identity.path}: EIO storm: failures up to LBA {lba} and "
                             f"known-good LBA {self.last_good} fails too ({err.reason})") from err
        self.map.commit_failures()

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._saved_at >= self.opts.save_interval:
            self.save()
        # totals walk the whole block list: report at most 20 times a second
        if self.progress is not None and (force or now - self._reported_at >= 0.05):
            self._reported_at = now
            t = self.map.totals()
            self.progress(RescueProgress(
                self.map.phase, self.map.pass_no, self.map.pos, t[Status.FINISHED],
                t[Status.BAD_SECTOR] + t[Status.NON_TRIMMED] + t[Status.NON_SCRAPED],
                t[Status.NON_TRIED], self.size, self.reads, self.errors))

    def save(self) -> None:
        """fsync the output, then atomically replace the mapfile."""
        os.fsync(self.out_fd)
        self.map.save(self.map_path, self.opts.command)
        self._saved_at = time.monotonic()

    def _wait_return(self, err: DeviceGone) -> bool:
        """Poll for the same device to come back and read again; True when it did."""
        if not self.opts.wait_reconnect or self.reopen is None:
            return False
        self.source.close()
        deadline = time.monotonic() + self.opts.wait_reconnect
        log.warning("waiting up to %.0f s for %s to come back", self.opts.wait_reconnect,
                    self.identity.path)
        while time.monotonic() < deadline:
            time.sleep(self.opts.poll_seconds)
            try:
                source = self.reopen()
            except DeviceError:
                continue
            if not source.identity.same_device(self.identity):
                log.warning("%s came back as a different device; still waiting", source.identity)
                source.close()
                continue
            try:
                if self.last_good is not None:
                    source.read(self.last_good, 1)
            except DeviceError:
                source.close()
                continue
            log.warning("%s is back; continuing", self.identity.path)
            self.source, self._run_fails = source, 0
            return True
        return False


def _open_output(path: Path, size: int) -> int:
    """Open (create) OUT without truncating; extend a regular file sparsely to ``size``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_size < size:
        os.ftruncate(fd, size)
    return fd


def _write_out(fd: int, offset: int, data: bytes) -> None:
    # keep OUT sparse: all-zero data over a hole already reads back as zeros
    if data != bytes(len(data)) or not _is_hole(fd, offset, len(data)):
        view = memoryview(data)
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


def _is_hole(fd: int, offset: int, length: int) -> bool:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError:  # ENXIO: no data after offset at all; EINVAL: not a regular file
        return os.fstat(fd).st_size >= offset + length and stat.S_ISREG(os.fstat(fd).st_mode)


def rescue(source: Source, out_path: Path, map_path: Path, options: RescueOptions,
           progress: Callable[[RescueProgress], None] | None = None,
           reopen: Callable[[], Source] | None = None) -> dict[Status, int]:
    """Rescue ``source`` into ``out_path`` with state in ``map_path`` (see module docstring).

    Returns:
        Bytes per mapfile status at the end.

    Raises:
        Interrupted: the source vanished and did not come back (state saved; rerun resumes).
        BadInput, FormatError: the mapfile does not fit the source or is not a mapfile.
    """
    rescuer = Rescuer(source, out_path, map_path, options, progress, reopen)
    try:
        return rescuer.run()
    finally:
        rescuer.close()
