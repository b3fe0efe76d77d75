"""Salvaging a range whose bulk read failed: split down, retry sectors, skip past dying areas.

``salvage_read`` is what the acquire pipeline calls when a chunk read raises ReadError. It
splits the range in halves until the failing pieces are single sectors, tries each failing
sector ``1 + retries`` times, and returns the data with unreadable sectors zero-filled plus the
exact UNREAD extents. A ``SkipPolicy`` that the caller keeps across chunks notices runs of errors
or slow reads and makes the walk jump ahead (the jump doubles on each further run, as GNU
ddrescue's ``--skip-size`` does), so a dying device is not hammered sector by sector. Skipped
sectors were never read: they are UNREAD too, and also listed in ``policy.skipped``.

A source that already knows its unreadable sectors (``read_with_unread(lba, count)``, e.g. a
rescued raw file seen through its mapfile) is asked directly: nothing to split or retry.

A run of failures that also fails a re-read of the last sector known to be good is an EIO storm
(a USB link that dropped looks like this through a loop or SCSI layer): DeviceGone is raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from formats.extent import Extent, Kind, merge
from imager.devices.base import Source
from imager.errors import DeviceGone, ReadError

log = logging.getLogger(__name__)


@dataclass
class SkipPolicy:
    """When to stop reading sector by sector and jump ahead. Keep one per device pass.

    Attributes:
        error_run: sectors in a row that failed every attempt before a skip starts.
        slow_seconds: a read slower than this counts as slow; ``slow_run`` in a row start a skip.
        skip_sectors: first jump; doubles on each further skip, up to ``max_skip_sectors``;
            back to the first size after a good, fast read.
        storm_check: on an error run, re-read the last good sector to tell a storm from damage.
    """

    error_run: int = 16  # > 8: one failed 4 KiB page of a 512e device is not yet a "run"
    slow_seconds: float = 2.0
    slow_run: int = 4
    skip_sectors: int = 128
    max_skip_sectors: int = 1 << 16
    storm_check: bool = True
    skipped: list[Extent] = field(default_factory=list)
    _errors: int = 0
    _slow: int = 0
    _next_skip: int = 0
    _pending: int = 0
    _pending_lba: int | None = None   # a carried-over skip applies only if reading goes on here
    last_good_lba: int | None = None

    def record(self, lba: int, count: int, ok: bool, seconds: float) -> None:
        """Note one read attempt; pipelines call this for their bulk chunk reads too.

        A failed multi-sector read only starts a split, so it does not count toward the error
        run; a sector that failed every attempt does (``record_bad_sector``).
        """
        if not ok:
            return
        self.last_good_lba = lba
        self._errors = 0
        if seconds > self.slow_seconds:
            self._slow += 1
        else:
            self._slow, self._next_skip = 0, 0
        self._maybe_trip()

    def record_bad_sector(self, lba: int) -> None:
        """Note a sector that failed all its attempts."""
        self._errors += 1
        self._maybe_trip()

    def _maybe_trip(self) -> None:
        if self._errors >= self.error_run or self._slow >= self.slow_run:
            self._next_skip = min(max(self._next_skip * 2, self.skip_sectors),
                                  self.max_skip_sectors)
            self._pending, self._pending_lba = self._next_skip, None
            self._errors = self._slow = 0

    @property
    def tripped(self) -> bool:
        """True when the error run just hit the limit (before the skip is taken)."""
        return self._pending > 0

    def take_skip(self, lba: int, count: int) -> int:
        """How many leading sectors of ``[lba, lba+count)`` to leave unread (records them)."""
        if self._pending and self._pending_lba is not None and lba != self._pending_lba:
            self._pending = 0  # reading resumed elsewhere (a good chunk came between)
        n = min(self._pending, count)
        self._pending_lba = lba + n if self._pending > n else None
        if n:
            self._pending -= n
            self.skipped[:] = merge(self.skipped + [Extent(lba, n, Kind.UNREAD)])
            log.info("skipping LBA %d+%d after a run of errors or slow reads", lba, n)
        return n


def _timed_read(source: Source, lba: int, count: int, policy: SkipPolicy) -> bytes | None:
    """The data, or None on a medium error; DeviceGone passes through."""
    start = time.monotonic()
    try:
        data = source.read(lba, count)
    except ReadError as err:
        log.debug("read LBA %d+%d failed: %s", lba, count, err.reason)
        return None
    policy.record(lba, count, True, time.monotonic() - start)
    return data


def _check_storm(source: Source, policy: SkipPolicy, lba: int) -> None:
    """Raise DeviceGone when the last known-good sector fails too (the device, not the medium)."""
    good = policy.last_good_lba
    if not policy.storm_check or good is None:
        return
    try:
        source.read(good, 1)
    except ReadError as err:
        raise DeviceGone(f"{source.identity.path}: EIO storm: a run of errors up to LBA {lba} "
                         f"and the known-good LBA {good} fails too ({err.reason})") from err


def _sector(source: Source, lba: int, retries: int, policy: SkipPolicy) -> bytes | None:
    for _attempt in range(1 + retries):
        data = _timed_read(source, lba, 1, policy)
        if data is not None:
            return data
    policy.record_bad_sector(lba)
    if policy.tripped:
        _check_storm(source, policy, lba)
    return None


def salvage_read(source: Source, lba: int, count: int, *, retries: int = 1,
                 skip_policy: SkipPolicy | None = None) -> tuple[bytes, list[Extent]]:
    """Read what can be read of ``[lba, lba+count)`` after a bulk read of it failed.

    Args:
        retries: extra single-sector attempts after the first one for each failing sector.
        skip_policy: kept by the caller across chunks; a fresh default one when None.

    Returns:
        ``count * sector_size`` bytes (unread sectors are zeros) and the merged UNREAD extents
        (absolute LBAs): sectors that failed every attempt plus sectors skipped unread.

    Raises:
        DeviceGone: the device disappeared (or an EIO storm hit a known-good sector too).
    """
    policy = skip_policy if skip_policy is not None else SkipPolicy()
    known = getattr(source, "read_with_unread", None)
    if known is not None:  # the source already knows which sectors are unreadable
        return known(lba, count)
    ss = source.sector_size
    out = bytearray(count * ss)
    unread: list[Extent] = []
    stack = [(lba, count)]  # contiguous, ascending when popped: push right half first
    while stack:
        start, n = stack.pop()
        skip = policy.take_skip(start, n)
        if skip:
            unread.append(Extent(start, skip, Kind.UNREAD))
            if skip < n:
                stack.append((start + skip, n - skip))
            continue
        data = (_sector(source, start, retries, policy) if n == 1
                else _timed_read(source, start, n, policy))
        if data is not None:
            out[(start - lba) * ss:(start - lba + n) * ss] = data
        elif n == 1:
            unread.append(Extent(start, 1, Kind.UNREAD))
        else:
            half = n // 2
            stack += [(start + half, n - half), (start, half)]
    if policy.tripped:
        policy._pending_lba = lba + count  # the rest of the skip: only for the next range
    return bytes(out), merge(sorted(unread, key=lambda e: e.start_lba))
