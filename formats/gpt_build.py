"""Building a whole GPT (both copies) from values, and moving the backup to a bigger disk.

Layout rules: specs/gpt-mbr.md section 3. Every header CRC and the array CRC are recomputed.
(The restore helper has its own byte-level ``formats/gpt_relocate.py``; these builders work on
the parsed dataclasses of formats/gpt.py.)
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


@dataclass(frozen=True)
class GptImage:
    """Every sector of a GPT and where it goes (LBAs in ``sector_size`` units)."""

    sector_size: int
    primary: GptHeader
    backup: GptHeader
    array: bytes                # entry array, zero-padded to whole sectors

    def writes(self) -> tuple[tuple[int, bytes], ...]:
        """(LBA, bytes) pairs to write: primary header + array, backup array + header."""
        ss = self.sector_size
        return ((self.primary.my_lba, build_gpt_header(self.primary, ss)),
                (self.primary.entry_lba, self.array),
                (self.backup.entry_lba, self.array),
                (self.backup.my_lba, build_gpt_header(self.backup, ss)))


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
                    new_sector_count: int, grow_usable: bool = True) -> GptImage:
    """The GPT of ``primary`` laid out for a disk of ``new_sector_count`` sectors.

    The backup array + header move to the new end; the primary's AlternateLBA (and, with
    ``grow_usable`` like ``sgdisk -e``, LastUsableLBA) follow; CRCs are recomputed. The
    array bytes are unchanged and must match the header's array CRC.

    Raises:
        ChecksumMismatch: ``array`` is not the one ``primary`` describes.
        InvalidField: a partition would end past the new LastUsableLBA.
    """
    check_array_crc(primary, array)
    body = bytes(array[: primary.array_bytes])
    n_array = primary.array_sectors(sector_size)
    last = new_sector_count - 2 - n_array if grow_usable else primary.last_usable_lba
    used_end = max((e.last_lba for e in parse_entry_array(body, primary.entry_count,
                                                          primary.entry_size) if e.is_used),
                   default=0)
    if last < max(used_end, primary.first_usable_lba) or last > new_sector_count - 2 - n_array:
        raise InvalidField("gpt", "disk size", new_sector_count,
                           f"partitions end at LBA {used_end}, usable area would end at {last}")
    moved = seal_header(replace(primary, alternate_lba=new_sector_count - 1,
                                last_usable_lba=last))
    return GptImage(sector_size, moved, _backup_of(moved, sector_size),
                    body.ljust(n_array * sector_size, b"\0"))
