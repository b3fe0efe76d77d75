"""What a disk's partition table says, independent of its format (GPT, MBR or none).

Produced by imager/table.py ``read_table``; consumed by the planner, acquire (manifest), restore
and ``imager info``. All LBAs count ``sector_size`` sectors and are inclusive where named
``last_lba`` (GPT convention), counts are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from formats.extent import Extent


@dataclass(frozen=True)
class Partition:
    """One partition: a GPT entry, an MBR primary record or an EBR logical partition."""

    index: int              # 1-based table slot (GPT entry number; MBR 1-4, logicals 5+)
    name: str               # GPT name (decoded, may contain anything: it is data); "" for MBR
    first_lba: int
    last_lba: int           # inclusive
    type_id: str            # GPT type GUID, or "0x83" style for MBR
    type_name: str = ""     # friendly name ("" when unknown)
    unique_guid: str = ""
    attributes: int = 0     # GPT attribute bits; MBR: the boot indicator byte
    attribute_names: tuple[str, ...] = ()
    role: str = "gpt"       # "gpt" | "primary" | "extended" (an MBR container) | "logical"

    @property
    def count_sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    def extent(self) -> Extent:
        """The partition as an Extent (start, count)."""
        return Extent(self.first_lba, self.count_sectors)

    def to_dict(self, sector_size: int | None = None) -> dict[str, Any]:
        """JSON-ready fields; ``size_bytes`` only when the sector size is given."""
        size = {} if sector_size is None else {"size_bytes": self.count_sectors * sector_size}
        return {"index": self.index, "name": self.name, "first_lba": self.first_lba,
                "last_lba": self.last_lba, "count_sectors": self.count_sectors,
                **size, "type_id": self.type_id,
                "type_name": self.type_name, "unique_guid": self.unique_guid,
                "attributes": self.attributes, "attribute_names": list(self.attribute_names),
                "role": self.role}


@dataclass(frozen=True)
class DiskTable:
    """The partition table of one disk (or one UFS LUN).

    ``primary_health``/``backup_health`` are "ok", "bad: <reason>", "missing" (no signature)
    or "n/a" (not a GPT disk). ``metadata_extents`` are every sector that holds table data:
    MBR (LBA 0), primary header + array, backup array + header, every EBR. ``gaps`` are the
    unallocated (first_lba, last_lba) ranges of the usable area. ``detected_sector_size`` is
    the logical sector size the table was written for; when it differs from ``sector_size``
    (a 4Kn image file opened with 512-byte sectors) every LBA here was rescaled to
    ``sector_size`` units and a warning says so: reopen with the detected size to see the
    table's own numbers.
    """

    kind: str                               # "gpt" | "mbr" | "none"
    sector_size: int
    sector_count: int
    disk_guid: str = ""                     # GPT disk GUID, or the MBR disk signature "0x..."
    partitions: tuple[Partition, ...] = ()
    warnings: tuple[str, ...] = ()
    metadata_extents: tuple[Extent, ...] = ()
    primary_health: str = "n/a"
    backup_health: str = "n/a"
    gaps: tuple[tuple[int, int], ...] = ()
    mbr_kind: str = "none"                  # "protective" | "hybrid" | "mbr" | "empty" | "none"
    detected_sector_size: int = 0           # 0: same as sector_size
    first_usable_lba: int = 0
    last_usable_lba: int = 0

    @property
    def table_sector_size(self) -> int:
        """The sector size the table itself uses."""
        return self.detected_sector_size or self.sector_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what ``imager info --json`` prints and manifests store)."""
        return {
            "kind": self.kind, "sector_size": self.sector_size,
            "sector_count": self.sector_count,
            "detected_sector_size": self.table_sector_size,
            "disk_guid": self.disk_guid, "mbr_kind": self.mbr_kind,
            "primary_health": self.primary_health, "backup_health": self.backup_health,
            "first_usable_lba": self.first_usable_lba, "last_usable_lba": self.last_usable_lba,
            "partitions": [p.to_dict(self.sector_size) for p in self.partitions],
            "gaps": [{"first_lba": a, "last_lba": b, "count_sectors": b - a + 1}
                     for a, b in self.gaps],
            "metadata_extents": [{"start_lba": e.start_lba, "count": e.count}
                                 for e in self.metadata_extents],
            "warnings": list(self.warnings),
        }


def find_partition(table: DiskTable, name: str) -> Partition | None:
    """The partition called exactly ``name``, or None (the first one when names repeat)."""
    for part in table.partitions:
        if part.name == name:
            return part
    return None


def compute_gaps(first_lba: int, last_lba: int,
                 used: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Unallocated inclusive ranges of ``[first_lba, last_lba]`` not covered by ``used``."""
    gaps = []
    cursor = first_lba
    for a, b in sorted(used):
        if b < cursor:
            continue
        if a > cursor:
            gaps.append((cursor, min(a - 1, last_lba)))
        cursor = max(cursor, b + 1)
        if cursor > last_lba:
            break
    if cursor <= last_lba:
        gaps.append((cursor, last_lba))
    return tuple(g for g in gaps if g[0] <= g[1])
