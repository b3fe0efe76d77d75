"""Building a whole GPT (both copies) from values, and moving the backup to a bigger disk.

Layout rules: specs/gpt-mbr.md section 3. Every header CRC and the array CRC are recomputed.
Migrating an image onto a bigger disk (imager/migrate.py) uses ``relocate_backup`` (optionally
growing the partition that ends last) and ``fit_protective_mbr``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from formats.errors import InvalidField
from formats.gpt import (
    ENTRY_SIZE,
    MIN_ARRAY_BYTES,
    REVISION,
    GptEntry,
    GptHeader,
    build_entry_array,
    build_gpt_header,
    check_array_crc,
    parse_entry_array,
    seal_header,
)
from formats.guids import PROTECTIVE_TYPE
from formats.mbr import BOOT_SIGNATURE, MBR_SIZE, build_mbr, parse_mbr

# (table slot, old LastLBA, new LastLBA) of the partition ``grow_last_entry`` extended
Grown = tuple[int, int, int]


@dataclass(frozen=True)
class GptImage:
    """Every sector of a GPT and where it goes (LBAs in ``sector_size`` units)."""

    sector_size: int
    primary: GptHeader
    backup: GptHeader
    array: bytes                # entry array, zero-padded to whole sectors
    grown: Grown | None = None  # set by relocate_backup(grow_last=True)

    def writes(self) -> tuple[tuple[int, bytes], ...]:
        """(LBA, bytes) pairs to write: primary header + array, backup array + header."""
        ss = self.sector_size
        return ((self.primary.my_lba, build_gpt_header(self.primary, ss)),
                (self.primary.entry_lba, self.array),
                (self.backup.entry_lba, self.array),
                (self.backup.my_lba, build_gpt_header(self.backup, ss)))

    def writes_backup_first(self) -> tuple[tuple[int, bytes], ...]:
        """The same writes ordered backup array, backup header, primary array, primary header.

        Over an existing GPT this keeps the old primary valid until its last sector is
        written (each header after the array its CRC covers).
        """
        p_header, p_array, b_array, b_header = self.writes()
        return (b_array, b_header, p_array, p_header)


def _backup_of(primary: GptHeader, sector_size: int) -> GptHeader:
    n_array = primary.array_sectors(sector_size)
    return seal_header(replace(primary, my_lba=primary.alternate_lba, alternate_lba=primary.my_lba,
                               entry_lba=primary.alternate_lba - n_array))


def build_gpt(entries: Sequence[GptEntry], *, sector_size: int, sector_count: int,
              disk_guid: str, entry_count: int = 128, entry_size: int = ENTRY_SIZE,
              first_usable_lba: int | None = None, last_usable_lba: int | None = None
              ) -> GptImage:
    """A GPT for a disk of ``sector_count`` sectors holding ``entries`` (each at its index).

    Defaults follow sgdisk: the array reserves at least 16 KiB after LBA 1 (FirstUsableLBA 34
    on 512-byte, 6 on 4096-byte sectors) and the backup array sits right before the last LBA.

    Raises:
        InvalidField: a value that does not fit (entry outside the usable range, bad index...).
    """
    array = build_entry_array(entries, entry_count, entry_size)
    n_array = -(-len(array) // sector_size)
    reserved = max(n_array, -(-MIN_ARRAY_BYTES // sector_size))
    first = 2 + reserved if first_usable_lba is None else first_usable_lba
    last = sector_count - 2 - reserved if last_usable_lba is None else last_usable_lba
    if not 2 + n_array <= first <= last <= sector_count - 2 - n_array:
        raise InvalidField("gpt", "usable range", (first, last),
                           f"does not fit a disk of {sector_count} sectors")
    for e in entries:
        if e.is_used and not first <= e.first_lba <= e.last_lba <= last:
            raise InvalidField("gpt entry", f"{e.index} LBAs", (e.first_lba, e.last_lba),
                               f"outside the usable range {first}..{last}")
    primary = seal_header(GptHeader(
        revision=REVISION, header_size=92, header_crc32=0, my_lba=1,
        alternate_lba=sector_count - 1, first_usable_lba=first, last_usable_lba=last,
        disk_guid=disk_guid, entry_lba=2, entry_count=entry_count, entry_size=entry_size,
        entry_array_crc32=zlib.crc32(array)))
    padded = array.ljust(n_array * sector_size, b"\0")
    return GptImage(sector_size, primary, _backup_of(primary, sector_size), padded)


def relocate_backup(primary: GptHeader, array: bytes, *, sector_size: int,
                    new_sector_count: int, grow_usable: bool = True,
                    grow_last: bool = False) -> GptImage:
    """The GPT of ``primary`` laid out for a disk of ``new_sector_count`` sectors.

    The backup array + header move to the new end; the primary's AlternateLBA (and, with
    ``grow_usable`` like ``sgdisk -e``, LastUsableLBA) follow; CRCs are recomputed. The
    array bytes are unchanged unless ``grow_last``: then the partition that ends last is
    extended to the new LastUsableLBA (``GptImage.grown`` says which, and from where).

    Raises:
        ChecksumMismatch: ``array`` is not the one ``primary`` describes.
        InvalidField: ``primary`` is not at LBA 1 or has no entries, a partition would end
            past the new LastUsableLBA, or ``grow_last`` with no partition.
    """
    _check_movable(primary)
    check_array_crc(primary, array, primary.entry_lba)
    n_array = primary.array_sectors(sector_size)
    entries = parse_entry_array(bytes(array[: primary.array_bytes]), primary.entry_count,
                                primary.entry_size)
    last = new_sector_count - 2 - n_array if grow_usable else primary.last_usable_lba
    used_end = last_used_lba(entries)
    if last < max(used_end, primary.first_usable_lba) or last > new_sector_count - 2 - n_array:
        raise InvalidField("gpt", "disk size", new_sector_count,
                           f"partitions end at LBA {used_end}, past LastUsableLBA {last}")
    grown = None
    if grow_last:
        entries, grown = grow_last_entry(entries, last)
    body = build_entry_array(entries, primary.entry_count, primary.entry_size)
    moved = seal_header(replace(primary, alternate_lba=new_sector_count - 1,
                                last_usable_lba=last, entry_array_crc32=zlib.crc32(body)))
    return GptImage(sector_size, moved, _backup_of(moved, sector_size),
                    body.ljust(n_array * sector_size, b"\0"), grown)


def _check_movable(primary: GptHeader) -> None:
    # the backup's place is computed from the primary's: anything else would be misplaced
    if primary.my_lba != 1:
        raise InvalidField("gpt header", "my_lba", primary.my_lba, "the primary is at LBA 1")
    if primary.entry_count == 0:
        raise InvalidField("gpt header", "entry_count", 0, "no entry array to move")


def last_used_lba(entries: Sequence[GptEntry]) -> int:
    """The LastLBA of the used entry that ends last (0 when none is used)."""
    return max((e.last_lba for e in entries if e.is_used), default=0)


def grow_last_entry(entries: Sequence[GptEntry],
                    new_last_lba: int) -> tuple[tuple[GptEntry, ...], Grown]:
    """``entries`` with the partition that ends last now ending at ``new_last_lba``.

    On a tie the lowest slot grows. Returns the new entries and (slot, old, new LastLBA).

    Raises:
        InvalidField: no entry is used, or ``new_last_lba`` is before that entry's FirstLBA.
    """
    used = [e for e in entries if e.is_used]
    if not used:
        raise InvalidField("gpt", "partitions", 0, "--grow-last needs at least one partition")
    last = max(used, key=lambda e: e.last_lba)
    if new_last_lba < last.first_lba:
        raise InvalidField("gpt entry", f"{last.index} last_lba", new_last_lba,
                           f"before its first_lba {last.first_lba}")
    out = tuple(replace(e, last_lba=new_last_lba) if e is last else e for e in entries)
    return out, (last.index, last.last_lba, new_last_lba)


def fit_protective_mbr(sector0: bytes, new_sector_count: int) -> bytes | None:
    """LBA 0 with the protective 0xEE record's size fitted to a disk of ``new_sector_count``.

    Only the size field changes; bytes past the first 512 (4096-byte sectors) are kept.
    Returns ``None`` when LBA 0 is not a pure protective MBR (hybrid, plain or absent MBRs
    describe partitions of their own and are left alone).
    """
    if len(sector0) < MBR_SIZE or sector0[510:MBR_SIZE] != BOOT_SIGNATURE:
        return None
    mbr = parse_mbr(sector0)
    first, *rest = mbr.records
    if first.type != PROTECTIVE_TYPE or any(r.type for r in rest):
        return None
    fitted = replace(first, count_sectors=min(new_sector_count - 1, 0xFFFFFFFF))
    return build_mbr(replace(mbr, records=(fitted, *rest))) + bytes(sector0[MBR_SIZE:])
