"""What changed between two snapshots, by partition (chunk granularity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imager.repo import snapshot as snapshots


@dataclass(frozen=True)
class PartDiff:
    """Changed sectors of one partition (or of the space outside every partition)."""

    name: str
    first_lba: int
    end_lba: int
    changed_sectors: int

    @property
    def size_sectors(self) -> int:
        return self.end_lba - self.first_lba


def _segments(doc: dict[str, Any]) -> list[tuple[int, int, Any]]:
    """(start, end, key) per chunk/run: equal keys mean equal bytes."""
    out = []
    for ext, digest in snapshots.range_extents(doc):
        key = digest if digest is not None else (ext.kind.value, ext.fill)
        out.append((ext.start_lba, ext.end_lba, key))
    return out


def changed_ranges(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[int, int]]:
    """LBA ranges [start, end) whose content differs (or that exist in only one snapshot)."""
    sa, sb = _segments(a), _segments(b)
    i = j = 0
    pos, out = 0, []
    end_all = max(a["sector_count"], b["sector_count"])
    while pos < end_all:
        while i < len(sa) and sa[i][1] <= pos:
            i += 1
        while j < len(sb) and sb[j][1] <= pos:
            j += 1
        ka = sa[i] if i < len(sa) else (pos, end_all, None)
        kb = sb[j] if j < len(sb) else (pos, end_all, None)
        end = min(ka[1], kb[1])
        if ka[2] != kb[2] or ka[2] is None:
            if out and out[-1][1] == pos:
                out[-1] = (out[-1][0], end)
            else:
                out.append((pos, end))
        pos = end
    return out


def partitions(doc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, first_lba, end_lba) from the snapshot's partition table, in LBA order."""
    table = snapshots.table_of(doc)
    parts = []
    for p in table.get("partitions", []) if isinstance(table, dict) else []:
        if isinstance(p.get("first_lba"), int) and isinstance(p.get("last_lba"), int):
            parts.append((p.get("name") or f"#{p.get('index')}", p["first_lba"], p["last_lba"] + 1))
    return sorted(parts, key=lambda t: t[1])


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[PartDiff]:
    """Changed sectors per partition of ``b``'s table (``a``'s when ``b`` has none), with
    one extra entry "(outside partitions)" for tables, gaps and the space past the last one."""
    ranges = changed_ranges(a, b)
    parts = partitions(b) or partitions(a)
    out = []
    covered = 0
    for name, first, end in parts:
        n = sum(max(0, min(e, end) - max(s, first)) for s, e in ranges)
        covered += n
        out.append(PartDiff(name, first, end, n))
    total = sum(e - s for s, e in ranges)
    out.append(PartDiff("(outside partitions)", 0, max(a["sector_count"], b["sector_count"]),
                        total - covered))
    return out
