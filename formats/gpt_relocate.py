"""Moving a GPT onto a bigger disk: new backup location, fixed header fields and CRCs.

Pure header/CRC math (specs/gpt-mbr.md sections 2-3): the caller hands in the primary header
sector and the entry array read from an image, plus the sector count of the disk they go to, and
gets back every sector to write. Optionally the partition that ends last grows to the new
LastUsableLBA (``--grow-last``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

from formats.errors import BadMagic, ChecksumMismatch, InvalidField, Truncated

GPT_SIGNATURE = b"EFI PART"
# Signature .. PartitionEntryArrayCRC32: the 92 bytes every revision has (spec section 2).
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY_LBAS = struct.Struct("<QQ")  # StartingLBA, EndingLBA at offset 32 of an entry
_PMBR_RECORD0 = 446


@dataclass(frozen=True)
class GptHeaderFields:
    """The fields of a GPT header (LBAs inclusive, as the spec has them)."""

    revision: int
    header_size: int
    header_crc: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: bytes
    entry_lba: int
    entry_count: int
    entry_size: int
    array_crc: int
    tail: bytes  # bytes after the 92 fixed ones (reserved; kept verbatim)


@dataclass(frozen=True)
class Relocation:
    """Every sector a migrated GPT needs, with where each goes."""

    primary_header: bytes      # one sector, for LBA 1
    array: bytes               # the entry array, for both copies
    primary_array_lba: int
    backup_array_lba: int
    backup_header: bytes       # one sector, for backup_header_lba
    backup_header_lba: int
    last_usable_lba: int
    grown: tuple[int, int, int] | None  # (table slot, old last LBA, new last LBA)


def parse_header(sector: bytes, lba: int) -> GptHeaderFields:
    """Parse and check a GPT header read from ``lba`` (signature, size, CRC, MyLBA).

    Raises:
        Truncated, BadMagic, InvalidField, ChecksumMismatch.
    """
    if len(sector) < _HEADER.size:
        raise Truncated("gpt header", _HEADER.size, len(sector))
    (sig, rev, hsize, hcrc, _res, my_lba, alt, first, last, guid, entry_lba, count, esize,
     acrc) = _HEADER.unpack_from(sector)
    if sig != GPT_SIGNATURE:
        raise BadMagic(f"gpt header at LBA {lba}", GPT_SIGNATURE, sig)
    if not _HEADER.size <= hsize <= len(sector):
        raise InvalidField("gpt header", "HeaderSize", hsize, f"not in 92..{len(sector)}")
    actual = _header_crc(sector[:hsize])
    if actual != hcrc:
        raise ChecksumMismatch("gpt header", lba=lba, expected=hcrc, actual=actual)
    if my_lba != lba:
        raise InvalidField("gpt header", "MyLBA", my_lba, f"header was read from LBA {lba}")
    if esize < 128 or esize % 128 or count == 0:
        raise InvalidField("gpt header", "entries", (count, esize), "need count>0, size 128*k")
    return GptHeaderFields(rev, hsize, hcrc, my_lba, alt, first, last, guid, entry_lba, count,
                           esize, acrc, bytes(sector[_HEADER.size:hsize]))


def build_header(fields: GptHeaderFields, sector_size: int) -> bytes:
    """One sector holding ``fields`` with a freshly computed HeaderCRC32 (rest zero)."""
    head = _HEADER.pack(GPT_SIGNATURE, fields.revision, fields.header_size, 0, 0, fields.my_lba,
                        fields.alternate_lba, fields.first_usable_lba, fields.last_usable_lba,
                        fields.disk_guid, fields.entry_lba, fields.entry_count,
                        fields.entry_size, fields.array_crc) + fields.tail
    crc = _header_crc(head)
    head = head[:16] + struct.pack("<I", crc) + head[20:]
    return head + bytes(sector_size - len(head))


def array_sectors(fields: GptHeaderFields, sector_size: int) -> int:
    """Sectors the entry array occupies (rounded up)."""
    return -(-fields.entry_count * fields.entry_size // sector_size)


def check_array(fields: GptHeaderFields, array: bytes) -> bytes:
    """The array bytes the header covers, after checking PartitionEntryArrayCRC32."""
    need = fields.entry_count * fields.entry_size
    if len(array) < need:
        raise Truncated("gpt entry array", need, len(array))
    actual = zlib.crc32(array[:need])
    if actual != fields.array_crc:
        raise ChecksumMismatch("gpt entry array", lba=fields.entry_lba,
                               expected=fields.array_crc, actual=actual)
    return bytes(array[:need])


def relocate(primary_sector: bytes, array: bytes, *, sector_size: int,
             new_sector_count: int, grow_last: bool = False) -> Relocation:
    """Lay the GPT out for a disk of ``new_sector_count`` sectors.

    The backup array+header move to the disk's last LBAs; both headers get the new
    AlternateLBA/LastUsableLBA (and the backup its PartitionEntryLBA) and fresh CRCs.

    Raises:
        FormatError: the primary header or array is not valid, or the disk is too small.
    """
    hdr = parse_header(primary_sector, 1)
    entries = bytearray(check_array(hdr, array))
    n_array = array_sectors(hdr, sector_size)
    backup_lba = new_sector_count - 1
    backup_array_lba = backup_lba - n_array
    last_usable = backup_array_lba - 1
    used_end = _last_used_lba(hdr, entries)
    if last_usable < max(used_end, hdr.first_usable_lba):
        raise InvalidField("gpt", "disk size", new_sector_count,
                           f"partitions end at LBA {used_end}, past LastUsableLBA {last_usable}")
    grown = _grow_last(hdr, entries, last_usable) if grow_last else None
    array_out = bytes(entries) + bytes(n_array * sector_size - len(entries))
    primary = replace(hdr, alternate_lba=backup_lba, last_usable_lba=last_usable,
                      array_crc=zlib.crc32(entries))
    backup = replace(primary, my_lba=backup_lba, alternate_lba=1, entry_lba=backup_array_lba)
    return Relocation(build_header(primary, sector_size), array_out, hdr.entry_lba,
                      backup_array_lba,
                      build_header(backup, sector_size), backup_lba, last_usable, grown)


def fix_pmbr(sector0: bytes, new_sector_count: int) -> bytes | None:
    """LBA 0 with the protective 0xEE record's size fitted to the new disk.

    Returns ``None`` when LBA 0 is not a pure protective MBR (hybrid or absent: left alone).
    """
    if len(sector0) < 512 or sector0[510:512] != b"\x55\xaa":
        return None
    types = [sector0[_PMBR_RECORD0 + 16 * i + 4] for i in range(4)]
    if types[0] != 0xEE or any(types[1:]):
        return None
    size = min(new_sector_count - 1, 0xFFFFFFFF)
    off = _PMBR_RECORD0 + 12
    return bytes(sector0[:off]) + struct.pack("<I", size) + bytes(sector0[off + 4:])


def _header_crc(header: bytes) -> int:
    # The CRC covers HeaderSize bytes with the CRC field itself read as zero (spec section 2).
    return zlib.crc32(bytes(header[:16]) + b"\0\0\0\0" + bytes(header[20:]))


def _used_slots(hdr: GptHeaderFields, entries: bytes) -> list[tuple[int, int, int]]:
    """(slot, first LBA, last LBA) of every used entry; slots are 1-based."""
    out = []
    for i in range(hdr.entry_count):
        off = i * hdr.entry_size
        if entries[off:off + 16] != bytes(16):
            first, last = _ENTRY_LBAS.unpack_from(entries, off + 32)
            out.append((i + 1, first, last))
    return out


def _last_used_lba(hdr: GptHeaderFields, entries: bytes) -> int:
    return max((last for _, _, last in _used_slots(hdr, entries)), default=0)


def _grow_last(hdr: GptHeaderFields, entries: bytearray,
               last_usable: int) -> tuple[int, int, int]:
    used = _used_slots(hdr, entries)
    if not used:
        raise InvalidField("gpt", "partitions", 0, "--grow-last needs at least one partition")
    slot, _first, last = max(used, key=lambda u: u[2])
    struct.pack_into("<Q", entries, (slot - 1) * hdr.entry_size + 40, last_usable)
    return slot, last, last_usable
