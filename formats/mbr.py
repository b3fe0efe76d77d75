"""The MBR (LBA 0), the protective/hybrid MBR of GPT disks, and EBR chains of logical partitions.

Layout: specs/gpt-mbr.md section 1. Only the first 512 bytes of a sector matter, also on
4096-byte media; every LBA in a record counts logical sectors of the medium.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import construct as cs

from formats.errors import BadMagic, FormatError, InvalidField, Truncated
from formats.guids import EXTENDED_TYPES, PROTECTIVE_TYPE

MBR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"
MAX_EBR_LINKS = 100  # Linux msdos.c gives up after 100 links (specs/gpt-mbr.md section 1)

RECORD = cs.Struct(
    "boot_indicator" / cs.Int8ul,
    "start_chs" / cs.Bytes(3),
    "type" / cs.Int8ul,
    "end_chs" / cs.Bytes(3),
    "start_lba" / cs.Int32ul,
    "count_sectors" / cs.Int32ul,
)

MBR_SECTOR = cs.Struct(
    "boot_code" / cs.Bytes(440),
    "disk_signature" / cs.Int32ul,
    "reserved" / cs.Bytes(2),
    "records" / cs.Array(4, RECORD),
    "boot_signature" / cs.Bytes(2),
)


@dataclass(frozen=True)
class MbrRecord:
    """One 16-byte partition record; ``start_lba`` is relative to what holds it (MBR: LBA 0)."""

    boot_indicator: int = 0
    start_chs: bytes = b"\0\0\0"
    type: int = 0
    end_chs: bytes = b"\0\0\0"
    start_lba: int = 0
    count_sectors: int = 0

    @property
    def is_used(self) -> bool:
        """A record with type 0 or size 0 is unused."""
        return self.type != 0 and self.count_sectors != 0

    @property
    def is_extended(self) -> bool:
        return self.is_used and self.type in EXTENDED_TYPES


@dataclass(frozen=True)
class Mbr:
    """A whole MBR-shaped sector (also used for EBRs)."""

    records: tuple[MbrRecord, ...]
    disk_signature: int = 0
    boot_code: bytes = bytes(440)
    reserved: bytes = b"\0\0"
    boot_signature: bytes = BOOT_SIGNATURE


def parse_record(data: bytes) -> MbrRecord:
    """Decode one 16-byte partition record."""
    if len(data) < RECORD.sizeof():
        raise Truncated("mbr partition record", RECORD.sizeof(), len(data))
    c = RECORD.parse(data[:RECORD.sizeof()])
    return MbrRecord(c.boot_indicator, c.start_chs, c.type, c.end_chs, c.start_lba,
                     c.count_sectors)


def _record_values(rec: MbrRecord) -> dict[str, object]:
    return {sc.name: getattr(rec, sc.name) for sc in RECORD.subcons}


def build_record(rec: MbrRecord) -> bytes:
    """Encode one partition record (16 bytes)."""
    try:
        return RECORD.build(_record_values(rec))
    except cs.ConstructError as err:
        raise InvalidField("mbr partition record", "value", rec, str(err)) from err


def parse_mbr(sector: bytes, what: str = "mbr") -> Mbr:
    """Decode the first 512 bytes of ``sector`` as an MBR (or EBR).

    Raises:
        Truncated: fewer than 512 bytes.
        BadMagic: no ``55 AA`` boot signature at offset 510.
    """
    if len(sector) < MBR_SIZE:
        raise Truncated(what, MBR_SIZE, len(sector))
    c = MBR_SECTOR.parse(sector[:MBR_SIZE])
    if c.boot_signature != BOOT_SIGNATURE:
        raise BadMagic(what, BOOT_SIGNATURE.hex(" "), c.boot_signature.hex(" "))
    records = tuple(MbrRecord(r.boot_indicator, r.start_chs, r.type, r.end_chs, r.start_lba,
                              r.count_sectors) for r in c.records)
    return Mbr(records, c.disk_signature, c.boot_code, c.reserved, c.boot_signature)


def build_mbr(mbr: Mbr) -> bytes:
    """Encode an MBR sector (512 bytes)."""
    if len(mbr.records) != 4:
        raise InvalidField("mbr", "records", len(mbr.records), "an MBR has exactly 4 records")
    values = {"boot_code": mbr.boot_code, "disk_signature": mbr.disk_signature,
              "reserved": mbr.reserved, "records": [_record_values(r) for r in mbr.records],
              "boot_signature": mbr.boot_signature}
    try:
        return MBR_SECTOR.build(values)
    except cs.ConstructError as err:
        raise InvalidField("mbr", "value", mbr.disk_signature, str(err)) from err


def check_boot_indicators(mbr: Mbr) -> None:
    """Linux rejects a table whose boot indicators are neither 0x00 nor 0x80 (msdos.c)."""
    for slot, rec in enumerate(mbr.records, 1):
        if rec.boot_indicator not in (0x00, 0x80):
            raise InvalidField("mbr", f"record {slot} boot_indicator",
                               f"{rec.boot_indicator:#04x}", "must be 0x00 or 0x80")


def classify_mbr(mbr: Mbr) -> str:
    """``"protective"``, ``"hybrid"`` (0xEE plus other types), ``"mbr"`` or ``"empty"``."""
    used = [r for r in mbr.records if r.is_used]
    if not used:
        return "empty"
    if any(r.type == PROTECTIVE_TYPE for r in used):
        return "hybrid" if any(r.type != PROTECTIVE_TYPE for r in used) else "protective"
    return "mbr"


def build_protective_mbr(sector_count: int, disk_signature: int = 0,
                         boot_code: bytes = bytes(440)) -> bytes:
    """A protective MBR for a GPT disk of ``sector_count`` logical sectors (spec section 1)."""
    rec = MbrRecord(0, b"\x00\x02\x00", PROTECTIVE_TYPE, b"\xff\xff\xff", 1,
                    min(sector_count - 1, 0xFFFFFFFF))
    return build_mbr(Mbr((rec, MbrRecord(), MbrRecord(), MbrRecord()), disk_signature,
                         boot_code))


@dataclass(frozen=True)
class LogicalPartition:
    """A logical partition found in an EBR; ``first_lba`` is absolute."""

    index: int          # 5, 6, ... as Linux and sfdisk number them
    ebr_lba: int        # the EBR that holds its record
    first_lba: int
    count_sectors: int
    record: MbrRecord


@dataclass(frozen=True)
class EbrChain:
    """What walking an EBR chain found: logical partitions, the EBR sectors, problems."""

    logicals: tuple[LogicalPartition, ...] = ()
    ebr_lbas: tuple[int, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def walk_ebr_chain(read_sector: Callable[[int], bytes | None], e0: int, e_count: int,
                   sector_count: int, max_links: int = MAX_EBR_LINKS,
                   first_index: int = 5) -> EbrChain:
    """Follow the EBR chain of the extended partition at ``e0`` (``e_count`` sectors).

    Record 1 of each EBR is relative to that EBR; the link (record 2) is relative to ``e0``
    (specs/gpt-mbr.md section 1). The walk stops with a warning on a loop, after
    ``max_links`` EBRs, on a missing ``55 AA``, an unreadable EBR (``read_sector`` returned
    None) or a link outside the extended partition; what was found until then is kept.

    Args:
        read_sector: returns the sector at an absolute LBA, or None when unreadable.
        first_index: the number of the first logical partition found (Linux: 5).
    """
    logicals: list[LogicalPartition] = []
    ebrs: list[int] = []
    warnings: list[str] = []
    end = min(e0 + e_count, sector_count)
    lba: int | None = e0
    while lba is not None:
        problem = _link_problem(lba, e0, end, ebrs, max_links)
        if problem:
            warnings.append(problem)
            break
        ebrs.append(lba)
        lba = _walk_one(read_sector, lba, e0, end, len(logicals) + first_index, logicals,
                        warnings)
    return EbrChain(tuple(logicals), tuple(ebrs), tuple(warnings))


def _link_problem(lba: int, e0: int, end: int, seen: list[int], max_links: int) -> str:
    if lba in seen:
        return f"EBR chain loops back to LBA {lba}; stopped after {len(seen)} EBRs"
    if len(seen) >= max_links:
        return f"EBR chain longer than {max_links} links; stopped at LBA {lba}"
    if not e0 <= lba < end:
        return f"EBR link to LBA {lba} is outside the extended partition {e0}..{end - 1}"
    return ""


def _walk_one(read_sector: Callable[[int], bytes | None], lba: int, e0: int, end: int,
              index: int, logicals: list[LogicalPartition], warnings: list[str]) -> int | None:
    """Parse the EBR at ``lba``; append its logical partition; return the next EBR LBA."""
    data = read_sector(lba)
    if data is None:
        warnings.append(f"EBR at LBA {lba} is unreadable; chain stopped")
        return None
    try:
        ebr = parse_mbr(data, what=f"EBR at LBA {lba}")
    except FormatError as err:
        warnings.append(f"{err}; chain stopped")
        return None
    data_recs = [r for r in ebr.records if r.is_used and not r.is_extended]
    links = [r for r in ebr.records if r.is_extended]
    if len(data_recs) > 1 or len(links) > 1:
        warnings.append(f"EBR at LBA {lba} has {len(data_recs)} data and {len(links)} link "
                        "records; only the first of each is used")
    if data_recs:
        rec = data_recs[0]
        first = lba + rec.start_lba
        if first + rec.count_sectors > end or rec.start_lba == 0:
            warnings.append(f"logical partition {index} in EBR at LBA {lba} ({first}+"
                            f"{rec.count_sectors}) is outside the extended partition; ignored")
        else:
            logicals.append(LogicalPartition(index, lba, first, rec.count_sectors, rec))
    return e0 + links[0].start_lba if links else None
