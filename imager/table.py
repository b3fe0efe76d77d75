"""Read the partition table of any Source: GPT (512 or 4096-byte sectors), MBR, or none.

Decision (specs/gpt-mbr.md sections 1, 3, 6):
1. a valid GPT copy at the source's sector size, else at 4096 when the source says 512
   (an image file of a 4Kn disk) -> "gpt";
2. a GPT signature or a protective/hybrid MBR but no usable copy -> NoValidGpt listing every
   reason (unless a plain MBR is there: then the stale GPT is a warning);
3. an MBR (``55 AA``, sane boot indicators) -> "mbr" with its EBR chain;
4. otherwise "none": a disk without a table is legitimate.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from formats.errors import FormatError, Truncated
from formats.extent import Extent
from formats.gpt import NoValidGpt, decode_attributes
from formats.guids import gpt_type_name, mbr_type_name
from formats.mbr import Mbr, check_boot_indicators, classify_mbr, parse_mbr, walk_ebr_chain
from formats.table import DiskTable, Partition, compute_gaps, find_partition
from imager.gpt_reader import GptRead, SectorView, read_gpt

__all__ = ["DiskTable", "NoValidGpt", "Partition", "find_partition", "read_metadata",
           "read_table"]

log = logging.getLogger(__name__)


def read_table(source: Any) -> DiskTable:
    """The partition table of ``source`` (a Source: device, file, image).

    LBAs in the result count ``source.sector_size`` sectors; ``detected_sector_size`` says
    which size the table was written for.

    Raises:
        NoValidGpt: a GPT is announced but neither copy is usable (every reason listed).
        Truncated: the source is smaller than one 512-byte sector.
        DeviceError: LBA 0 cannot be read.
    """
    if source.sector_count * source.sector_size < 512:
        raise Truncated("disk", 512, source.sector_count * source.sector_size)
    mbr, mbr_kind = _read_mbr(source)
    reasons: list[str] = []
    signature_seen = False
    sizes = [source.sector_size] + ([4096] if source.sector_size == 512 else [])
    for ss in sizes:
        view = SectorView(source, ss)
        if view.sector_count < 3:
            continue
        gpt = read_gpt(view)
        if gpt.header is not None:
            return _rescale(_gpt_table(view, gpt, mbr, mbr_kind), source.sector_size)
        signature_seen |= gpt.signature_seen
        prefix = f"{ss}-byte sectors: " if len(sizes) > 1 else ""
        reasons.append(prefix + ", ".join(gpt.reasons))
    if mbr is not None and mbr_kind in ("mbr", "empty"):
        stale = [f"GPT signature found but unusable ({'; '.join(reasons)}); using the MBR"] \
            if signature_seen else []
        return _mbr_table(SectorView(source, source.sector_size), mbr, mbr_kind, stale)
    if signature_seen or mbr_kind in ("protective", "hybrid"):
        raise NoValidGpt(reasons if signature_seen else
                         [f"{mbr_kind} MBR announces a GPT"] + reasons)
    return DiskTable("none", source.sector_size, source.sector_count, mbr_kind=mbr_kind,
                     gaps=((0, source.sector_count - 1),))


def _read_mbr(source: Any) -> tuple[Mbr | None, str]:
    sector0 = source.read(0, 1)
    try:
        mbr = parse_mbr(sector0)
        check_boot_indicators(mbr)
    except FormatError as err:
        log.debug("no MBR: %s", err)
        return None, "none"
    return mbr, classify_mbr(mbr)


def read_metadata(source: Any, table: DiskTable) -> list[tuple[Extent, bytes]]:
    """The raw bytes of every table sector (``table.metadata_extents``), for the manifest.

    Raises:
        DeviceError: a sector cannot be read.
    """
    if table.sector_size != source.sector_size:
        raise ValueError(f"table counts {table.sector_size}-byte sectors, the source "
                         f"{source.sector_size}")
    return [(e, source.read(e.start_lba, e.count)) for e in table.metadata_extents]


# --- GPT -----------------------------------------------------------------------------------

def _gpt_partitions(gpt: GptRead, n: int, warnings: list[str]) -> list[Partition]:
    h = gpt.header
    assert h is not None
    parts = []
    for e in gpt.entries:
        if not e.is_used:
            continue
        if e.first_lba > e.last_lba or e.last_lba >= n:
            warnings.append(f"GPT entry {e.index} ({e.name!r}) LBAs {e.first_lba}..{e.last_lba} "
                            f"are not on the disk (0..{n - 1}); ignored")
            continue
        if e.first_lba < h.first_usable_lba or e.last_lba > h.last_usable_lba:
            warnings.append(f"GPT entry {e.index} ({e.name!r}) {e.first_lba}..{e.last_lba} is "
                            f"outside the usable area {h.first_usable_lba}..{h.last_usable_lba}")
        parts.append(Partition(e.index, e.name, e.first_lba, e.last_lba, e.type_guid,
                               gpt_type_name(e.type_guid), e.unique_guid, e.attributes,
                               decode_attributes(e.attributes, e.type_guid), "gpt"))
    warnings += _overlaps(parts)
    return parts


def _overlaps(parts: list[Partition]) -> list[str]:
    out = []
    widest: Partition | None = None  # the partition reaching furthest so far
    for b in sorted(parts, key=lambda p: (p.first_lba, p.last_lba)):
        if widest is not None and b.first_lba <= widest.last_lba:
            out.append(f"partitions {widest.index} and {b.index} overlap ({widest.first_lba}.."
                       f"{widest.last_lba} and {b.first_lba}..{b.last_lba})")
        if widest is None or b.last_lba > widest.last_lba:
            widest = b
    return out


def _gpt_metadata(view: SectorView, gpt: GptRead) -> list[Extent]:
    h = gpt.header
    assert h is not None
    n_array = h.array_sectors(view.sector_size)
    out = [Extent(0, 1)]
    for copy, default_array in ((gpt.primary, 2), (gpt.backup, gpt.backup.lba - n_array)):
        out.append(Extent(copy.lba, 1))
        own = copy.header or h
        start = own.entry_lba if copy.header else default_array
        count = own.array_sectors(view.sector_size)
        if 0 <= start and start + count <= view.sector_count:
            out.append(Extent(start, count))
    return _normalize(out)


def _normalize(extents: list[Extent]) -> list[Extent]:
    """Sorted, overlapping/adjacent extents joined."""
    out: list[Extent] = []
    for e in sorted(extents, key=lambda e: e.start_lba):
        if out and e.start_lba <= out[-1].end_lba:
            last = out.pop()
            e = Extent(last.start_lba, max(last.end_lba, e.end_lba) - last.start_lba)
        out.append(e)
    return out


def _gpt_table(view: SectorView, gpt: GptRead, mbr: Mbr | None, mbr_kind: str) -> DiskTable:
    h = gpt.header
    assert h is not None
    warnings = list(gpt.warnings)
    if mbr_kind == "hybrid":
        warnings.append("hybrid MBR: LBA 0 also describes partitions; the GPT is used")
    elif mbr_kind in ("mbr", "empty"):
        warnings.append(f"LBA 0 holds a {mbr_kind} MBR instead of a protective MBR")
    parts = _gpt_partitions(gpt, view.sector_count, warnings)
    meta = _gpt_metadata(view, gpt)
    used = [(p.first_lba, p.last_lba) for p in parts] + \
        [(e.start_lba, e.end_lba - 1) for e in meta]
    return DiskTable(
        "gpt", view.sector_size, view.sector_count, h.disk_guid, tuple(parts), tuple(warnings),
        tuple(meta), gpt.primary.health, gpt.backup.health,
        compute_gaps(h.first_usable_lba, h.last_usable_lba, used), mbr_kind,
        first_usable_lba=h.first_usable_lba, last_usable_lba=h.last_usable_lba)


# --- MBR -----------------------------------------------------------------------------------

def _mbr_partitions(view: SectorView, mbr: Mbr, warnings: list[str]
                    ) -> tuple[list[Partition], list[int]]:
    n = view.sector_count
    parts: list[Partition] = []
    ebrs: list[int] = []
    for slot, rec in enumerate(mbr.records, 1):
        if not rec.is_used:
            continue
        last = rec.start_lba + rec.count_sectors - 1
        if rec.start_lba == 0 or last >= n:
            warnings.append(f"MBR record {slot} ({rec.start_lba}+{rec.count_sectors}) is not "
                            f"on the disk (1..{n - 1}); ignored")
            continue
        parts.append(_mbr_partition(slot, rec.start_lba, last, rec.type, rec.boot_indicator,
                                    "extended" if rec.is_extended else "primary"))
        if rec.is_extended:
            chain = walk_ebr_chain(view.read_or_none, rec.start_lba, rec.count_sectors, n,
                                   first_index=5 + sum(p.role == "logical" for p in parts))
            warnings += chain.warnings
            ebrs += chain.ebr_lbas
            parts += [_mbr_partition(lp.index, lp.first_lba,
                                     lp.first_lba + lp.count_sectors - 1, lp.record.type,
                                     lp.record.boot_indicator, "logical")
                      for lp in chain.logicals]
    return parts, ebrs


def _mbr_partition(index: int, first: int, last: int, type_byte: int, boot: int,
                   role: str) -> Partition:
    return Partition(index, "", first, last, f"0x{type_byte:02x}", mbr_type_name(type_byte),
                     "", boot, ("active",) if boot == 0x80 else (), role)


def _mbr_table(view: SectorView, mbr: Mbr, mbr_kind: str, warnings: list[str]) -> DiskTable:
    parts, ebrs = _mbr_partitions(view, mbr, warnings)
    data_parts = [p for p in parts if p.role != "extended"]
    warnings += _overlaps(data_parts)
    meta = _normalize([Extent(0, 1)] + [Extent(lba, 1) for lba in ebrs])
    used = [(p.first_lba, p.last_lba) for p in data_parts] + [(lba, lba) for lba in ebrs]
    n = view.sector_count
    return DiskTable("mbr", view.sector_size, n, f"0x{mbr.disk_signature:08x}", tuple(parts),
                     tuple(warnings), tuple(meta), gaps=compute_gaps(1, n - 1, used),
                     mbr_kind=mbr_kind, first_usable_lba=1, last_usable_lba=n - 1)


# --- units ---------------------------------------------------------------------------------

def _rescale(table: DiskTable, source_sector_size: int) -> DiskTable:
    """Express a table found at a larger sector size in the source's sector units."""
    if table.sector_size == source_sector_size:
        return table
    f = table.sector_size // source_sector_size
    parts = tuple(replace(p, first_lba=p.first_lba * f, last_lba=(p.last_lba + 1) * f - 1)
                  for p in table.partitions)
    warning = (f"the table uses {table.sector_size}-byte sectors but the source was opened "
               f"with {source_sector_size}-byte sectors; LBAs here count "
               f"{source_sector_size}-byte sectors (open it with --sector-size "
               f"{table.sector_size} for the table's own numbers)")
    return replace(
        table, sector_size=source_sector_size, sector_count=table.sector_count * f,
        partitions=parts, warnings=(*table.warnings, warning),
        metadata_extents=tuple(Extent(e.start_lba * f, e.count * f)
                               for e in table.metadata_extents),
        gaps=tuple((a * f, (b + 1) * f - 1) for a, b in table.gaps),
        detected_sector_size=table.sector_size, first_usable_lba=table.first_usable_lba * f,
        last_usable_lba=(table.last_usable_lba + 1) * f - 1)
