"""The acquisition plan: partition table + the user's selection -> what each chunk reads.

The chunk grid is fixed (chunk ``i`` covers LBAs ``[i*chunk_sectors, (i+1)*chunk_sectors)``);
the selection only says which sectors of each chunk are read. Sectors holding partition tables
are always read; everything not selected is NOT_ACQUIRED, never reported as read.
"""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from formats.extent import Extent, Kind
from imager.errors import UsageError


@dataclass(frozen=True)
class ChunkTask:
    """One chunk to acquire: its full extent, the ranges to read in it, a label for progress."""

    index: int
    extent: Extent
    reads: tuple[Extent, ...]
    label: str = ""

    @property
    def skipped(self) -> list[Extent]:
        """The NOT_ACQUIRED ranges inside the chunk."""
        out, pos = [], self.extent.start_lba
        for r in self.reads + (Extent(self.extent.end_lba, 0),):
            if r.start_lba > pos:
                out.append(Extent(pos, r.start_lba - pos, Kind.NOT_ACQUIRED))
            pos = max(pos, r.end_lba)
        return out


@dataclass(frozen=True)
class Plan:
    """What to read, chunk by chunk. ``selected`` holds the DATA (to read) ranges, merged."""

    sector_size: int
    sector_count: int
    chunk_sectors: int
    selected: tuple[Extent, ...]
    labels: tuple[tuple[int, int, str], ...] = ()   # (first_lba, end_lba, partition name)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def chunk_count(self) -> int:
        return -(-self.sector_count // self.chunk_sectors)

    @property
    def acquired_sectors(self) -> int:
        return sum(e.count for e in self.selected)

    def not_acquired(self) -> list[tuple[int, int]]:
        """Every excluded range as (start_lba, count)."""
        out, pos = [], 0
        for e in self.selected + (Extent(self.sector_count, 0),):
            if e.start_lba > pos:
                out.append((pos, e.start_lba - pos))
            pos = e.end_lba
        return out

    def label_at(self, lba: int) -> str:
        """The name of the partition holding ``lba`` ("" outside partitions)."""
        i = bisect.bisect_right([s for s, _, _ in self.labels], lba) - 1
        if i >= 0 and self.labels[i][0] <= lba < self.labels[i][1]:
            return self.labels[i][2]
        return ""

    def task(self, index: int) -> ChunkTask:
        """The task of chunk ``index``."""
        start = index * self.chunk_sectors
        end = min(start + self.chunk_sectors, self.sector_count)
        starts = [e.start_lba for e in self.selected]
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        reads = []
        for e in self.selected[i:]:
            if e.start_lba >= end:
                break
            lo, hi = max(e.start_lba, start), min(e.end_lba, end)
            if lo < hi:
                reads.append(Extent(lo, hi - lo))
        return ChunkTask(index, Extent(start, end - start), tuple(reads), self.label_at(start))

    def tasks(self, start: int = 0) -> Iterator[ChunkTask]:
        """Tasks from chunk ``start`` to the end."""
        for index in range(start, self.chunk_count):
            yield self.task(index)

    def to_dict(self) -> dict[str, Any]:
        """What the journal compares on resume."""
        return {"chunk_sectors": self.chunk_sectors, "include": list(self.include),
                "exclude": list(self.exclude),
                "selected": [[e.start_lba, e.count] for e in self.selected]}


def _union(ranges: list[tuple[int, int]]) -> list[Extent]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        elif end > start:
            out.append([start, end])
    return [Extent(s, e - s) for s, e in out]


def _match(partitions: list[Any], patterns: tuple[str, ...], flag: str) -> list[Any]:
    chosen = []
    for pattern in patterns:
        hits = [p for p in partitions if fnmatch.fnmatchcase(p.name, pattern)]
        if not hits:
            names = ", ".join(sorted({p.name for p in partitions})) or "none"
            raise UsageError(f"{flag} {pattern!r} matches no partition (partitions: {names})")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def build_plan(sector_count: int, sector_size: int, chunk_sectors: int, table: Any = None,
               include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Plan:
    """Turn a DiskTable (or None) and ``--partition``/``--exclude`` globs into a Plan.

    Raises:
        UsageError: a selection without a partition table, or a pattern matching nothing.
    """
    parts = list(getattr(table, "partitions", ()) or ())
    if (include or exclude) and not parts:
        raise UsageError("--partition/--exclude need a partition table, and none was found")
    span = [(p.first_lba, p.last_lba + 1) for p in parts]
    meta = [(e.start_lba, e.end_lba) for e in getattr(table, "metadata_extents", ()) or ()]
    excluded = [(p.first_lba, p.last_lba + 1) for p in _match(parts, exclude, "--exclude")]
    if include:
        chosen = [p for p in _match(parts, include, "--partition")]
        wanted = [(p.first_lba, p.last_lba + 1) for p in chosen if
                  (p.first_lba, p.last_lba + 1) not in excluded]
    else:
        wanted = _subtract([(0, sector_count)], excluded)
    selected = _union(wanted + meta) if (include or exclude) else [Extent(0, sector_count)]
    labels = tuple(sorted((s, e, p.name) for (s, e), p in zip(span, parts)))
    return Plan(sector_size, sector_count, chunk_sectors,
                tuple(e for e in selected if e.start_lba < sector_count), labels,
                tuple(include), tuple(exclude))


def _subtract(ranges: list[tuple[int, int]], cut: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = ranges
    for c0, c1 in cut:
        nxt = []
        for r0, r1 in out:
            if c1 <= r0 or c0 >= r1:
                nxt.append((r0, r1))
                continue
            if r0 < c0:
                nxt.append((r0, c0))
            if c1 < r1:
                nxt.append((c1, r1))
        out = nxt
    return out
