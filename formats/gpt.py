"""GPT header and partition-entry array: parse, validate, build (specs/gpt-mbr.md sections 2-4).

Parsing never trusts a size field: ``entry_count * entry_size`` is bounded by ``MAX_ARRAY_BYTES``
and by the device before anything is read or allocated. Builders (``build_gpt``,
``relocate_backup``) live in formats/gpt_build.py.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, replace

import construct as cs

from formats.errors import BadMagic, ChecksumMismatch, FormatError, InvalidField, Truncated
from formats.guids import MS_BASIC_DATA, UNUSED_GUID

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
NAME_BYTES = 72
MIN_ARRAY_BYTES = 16384       # space reserved for the array even when fewer entries are declared
MAX_ARRAY_BYTES = 1 << 20     # 8192 entries of 128 bytes; far above any real table
_CRC_OFFSET = 16


class NoValidGpt(FormatError):
    """A GPT is announced (signature or protective MBR) but no copy of it is valid."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("no valid GPT: " + "; ".join(reasons))
        self.reasons = list(reasons)


class _Guid(cs.Adapter):
    """16 mixed-endian bytes <-> the canonical upper-case GUID string (spec section 4)."""

    def _decode(self, obj: bytes, context: object, path: str) -> str:
        return guid_from_bytes(obj)

    def _encode(self, obj: str, context: object, path: str) -> bytes:
        return guid_to_bytes(obj)


GUID = _Guid(cs.Bytes(16))

HEADER = cs.Struct(
    "signature" / cs.Bytes(8),
    "revision" / cs.Int32ul,
    "header_size" / cs.Int32ul,
    "header_crc32" / cs.Int32ul,
    "reserved" / cs.Int32ul,
    "my_lba" / cs.Int64ul,
    "alternate_lba" / cs.Int64ul,
    "first_usable_lba" / cs.Int64ul,
    "last_usable_lba" / cs.Int64ul,
    "disk_guid" / GUID,
    "entry_lba" / cs.Int64ul,
    "entry_count" / cs.Int32ul,
    "entry_size" / cs.Int32ul,
    "entry_array_crc32" / cs.Int32ul,
)

ENTRY = cs.Struct(
    "type_guid" / GUID,
    "unique_guid" / GUID,
    "first_lba" / cs.Int64ul,
    "last_lba" / cs.Int64ul,
    "attributes" / cs.Int64ul,
    "name_utf16" / cs.Bytes(NAME_BYTES),
)


def guid_from_bytes(raw: bytes) -> str:
    """The canonical string of a 16-byte on-disk GUID (Data1-3 little-endian)."""
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


def guid_to_bytes(text: str) -> bytes:
    """The 16 on-disk bytes of a GUID string."""
    try:
        return uuid.UUID(text).bytes_le
    except (ValueError, TypeError, AttributeError) as err:
        raise InvalidField("guid", "value", text, "not a GUID") from err


@dataclass(frozen=True)
class GptHeader:
    """Every field of a GPT header; ``tail`` holds the bytes after offset 92 in its sector."""

    revision: int
    header_size: int
    header_crc32: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    entry_lba: int
    entry_count: int
    entry_size: int
    entry_array_crc32: int
    reserved: int = 0
    signature: bytes = SIGNATURE
    tail: bytes = b""

    @property
    def array_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def array_sectors(self, sector_size: int) -> int:
        """Whole sectors the entry array occupies."""
        return -(-self.array_bytes // sector_size)


@dataclass(frozen=True)
class GptEntry:
    """One slot of the entry array; ``index`` is the 1-based slot number (not stored on disk)."""

    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int = 0
    name_utf16: bytes = bytes(NAME_BYTES)
    index: int = 0
    extra: bytes = b""  # bytes beyond 128 in larger entries (reserved)

    @property
    def is_used(self) -> bool:
        return self.type_guid != UNUSED_GUID

    @property
    def name(self) -> str:
        """The UTF-16LE name up to the first NUL; undecodable units become U+FFFD."""
        raw = self.name_utf16
        for off in range(0, len(raw) - 1, 2):
            if raw[off] == 0 and raw[off + 1] == 0:
                raw = raw[:off]
                break
        return raw[: len(raw) & ~1].decode("utf-16-le", errors="replace")


def encode_name(name: str) -> bytes:
    """The 72 on-disk bytes of a partition name (at most 36 UTF-16 code units)."""
    raw = name.encode("utf-16-le", errors="surrogatepass")
    if len(raw) > NAME_BYTES:
        raise InvalidField("gpt entry", "name", name, "longer than 36 UTF-16 code units")
    return raw.ljust(NAME_BYTES, b"\0")


def header_crc(header: GptHeader) -> int:
    """CRC32 of the header's first ``header_size`` bytes with the CRC field zeroed."""
    if not HEADER_SIZE <= header.header_size <= 1 << 16:
        raise InvalidField("gpt header", "header_size", header.header_size,
                           f"must be {HEADER_SIZE}..65536")
    # bytes past the built ones are the zero padding build_gpt_header adds
    raw = bytearray(_build_header_raw(header).ljust(header.header_size, b"\0"))
    raw[_CRC_OFFSET:_CRC_OFFSET + 4] = b"\0\0\0\0"
    return zlib.crc32(bytes(raw[: header.header_size]))


def seal_header(header: GptHeader) -> GptHeader:
    """The same header with ``header_crc32`` recomputed."""
    return replace(header, header_crc32=header_crc(header))


def _build_header_raw(h: GptHeader) -> bytes:
    try:
        return HEADER.build(_header_values(h)) + h.tail
    except cs.ConstructError as err:
        raise InvalidField("gpt header", "value", h.my_lba, str(err)) from err


def _header_values(h: GptHeader) -> dict[str, object]:
    return {sc.name: getattr(h, sc.name) for sc in HEADER.subcons}


def parse_gpt_header(sector: bytes, lba: int | None = None) -> GptHeader:
    """Decode the GPT header at the start of ``sector`` (the whole logical sector).

    Checks what the bytes alone can tell: signature, header size, header CRC.

    Raises:
        Truncated, BadMagic, InvalidField (header size), ChecksumMismatch (header CRC).
    """
    if len(sector) < HEADER_SIZE:
        raise Truncated("gpt header", HEADER_SIZE, len(sector))
    c = HEADER.parse(sector[:HEADER_SIZE])
    if c.signature != SIGNATURE:
        raise BadMagic("gpt header", SIGNATURE.decode(), bytes(c.signature))
    if not HEADER_SIZE <= c.header_size <= len(sector):
        raise InvalidField("gpt header", "header_size", c.header_size,
                           f"must be {HEADER_SIZE}..{len(sector)} (the sector size)")
    header = GptHeader(**{sc.name: c[sc.name] for sc in HEADER.subcons},
                       tail=bytes(sector[HEADER_SIZE:]))
    actual = header_crc(header)
    if actual != header.header_crc32:
        raise ChecksumMismatch("gpt header", lba=lba, expected=header.header_crc32,
                               actual=actual)
    return header


def build_gpt_header(header: GptHeader, sector_size: int | None = None) -> bytes:
    """Encode a header as stored (CRC as given: see ``seal_header``), zero-padded to a sector."""
    raw = _build_header_raw(header)
    if sector_size is not None:
        if len(raw) > sector_size:
            raise InvalidField("gpt header", "tail", len(raw), f"longer than {sector_size}")
        raw = raw.ljust(sector_size, b"\0")
    return raw


def check_entry_geometry(entry_count: int, entry_size: int) -> None:
    """Entry size must be 128 x 2^n and the array at most ``MAX_ARRAY_BYTES``."""
    if entry_size < ENTRY_SIZE or entry_size % ENTRY_SIZE or entry_size & (entry_size - 1):
        raise InvalidField("gpt header", "entry_size", entry_size, "must be 128 x 2^n")
    if entry_count * entry_size > MAX_ARRAY_BYTES:
        raise InvalidField("gpt header", "entry_count", entry_count,
                           f"array of {entry_count} x {entry_size} bytes exceeds "
                           f"{MAX_ARRAY_BYTES}")


def check_gpt_header(h: GptHeader, *, lba: int, sector_count: int, sector_size: int) -> None:
    """The checks that need the position and the device size (spec section 2, Linux efi.c).

    Raises:
        InvalidField: naming the first field that does not fit.
    """
    if h.my_lba != lba:
        raise InvalidField("gpt header", "my_lba", h.my_lba, f"header was read from LBA {lba}")
    if h.first_usable_lba > h.last_usable_lba:
        raise InvalidField("gpt header", "first_usable_lba", h.first_usable_lba,
                           f"after last_usable_lba {h.last_usable_lba}")
    if h.last_usable_lba >= sector_count:
        raise InvalidField("gpt header", "last_usable_lba", h.last_usable_lba,
                           f"beyond the device ({sector_count} sectors)")
    check_entry_geometry(h.entry_count, h.entry_size)
    end = h.entry_lba + h.array_sectors(sector_size)
    if h.entry_lba < 1 or end > sector_count or h.entry_lba <= lba < end:
        raise InvalidField("gpt header", "entry_lba", h.entry_lba,
                           f"array of {h.array_sectors(sector_size)} sectors does not fit "
                           f"on the device ({sector_count} sectors) beside the header")


def parse_gpt_entry(raw: bytes, index: int = 0) -> GptEntry:
    """Decode one entry (``len(raw)`` is the entry size, at least 128)."""
    if len(raw) < ENTRY_SIZE:
        raise Truncated("gpt entry", ENTRY_SIZE, len(raw))
    c = ENTRY.parse(raw[:ENTRY_SIZE])
    return GptEntry(c.type_guid, c.unique_guid, c.first_lba, c.last_lba, c.attributes,
                    bytes(c.name_utf16), index, bytes(raw[ENTRY_SIZE:]))


def build_gpt_entry(entry: GptEntry) -> bytes:
    """Encode one entry: 128 bytes plus its ``extra`` bytes."""
    try:
        raw = ENTRY.build({sc.name: getattr(entry, sc.name) for sc in ENTRY.subcons})
    except cs.ConstructError as err:
        raise InvalidField("gpt entry", "value", entry.index, str(err)) from err
    return raw + entry.extra


def parse_entry_array(data: bytes, entry_count: int, entry_size: int) -> tuple[GptEntry, ...]:
    """Every one of ``entry_count`` entries (used or not), indexed from 1.

    Raises:
        InvalidField: bad geometry; Truncated: ``data`` is shorter than the array.
    """
    check_entry_geometry(entry_count, entry_size)
    if len(data) < entry_count * entry_size:
        raise Truncated("gpt entry array", entry_count * entry_size, len(data))
    zero = bytes(entry_size)
    out = []
    for i in range(entry_count):
        raw = data[i * entry_size:(i + 1) * entry_size]
        if raw == zero:  # the common unused slot: skip construct for speed
            out.append(GptEntry(UNUSED_GUID, UNUSED_GUID, 0, 0, 0, bytes(NAME_BYTES), i + 1,
                                bytes(entry_size - ENTRY_SIZE)))
        else:
            out.append(parse_gpt_entry(raw, i + 1))
    return tuple(out)


def build_entry_array(entries: tuple[GptEntry, ...] | list[GptEntry], entry_count: int,
                      entry_size: int = ENTRY_SIZE) -> bytes:
    """The array bytes: each entry at its ``index`` slot, unused slots zero."""
    check_entry_geometry(entry_count, entry_size)
    buf = bytearray(entry_count * entry_size)
    for e in entries:
        if not 1 <= e.index <= entry_count:
            raise InvalidField("gpt entry", "index", e.index, f"must be 1..{entry_count}")
        raw = build_gpt_entry(e)
        if len(raw) != entry_size:
            raise InvalidField("gpt entry", "extra", len(e.extra),
                               f"entry is {len(raw)} bytes, the array uses {entry_size}")
        buf[(e.index - 1) * entry_size:e.index * entry_size] = raw
    return bytes(buf)


def check_array_crc(header: GptHeader, data: bytes, lba: int | None = None) -> None:
    """Raise ChecksumMismatch unless the array bytes match ``header.entry_array_crc32``."""
    actual = zlib.crc32(data[: header.array_bytes])
    if actual != header.entry_array_crc32:
        raise ChecksumMismatch("gpt entry array", lba=lba, expected=header.entry_array_crc32,
                               actual=actual)


# Attribute bits (spec section 2, "Attribute bits"). A/B bits: Qualcomm ABL PART_ATT_*.
_COMMON_BITS = {0: "platform_required", 1: "no_block_io", 2: "legacy_bios_bootable"}
_MS_BITS = {60: "read_only", 61: "shadow_copy", 62: "hidden", 63: "no_drive_letter"}
AB_PRIORITY_SHIFT, AB_ACTIVE_BIT, AB_RETRY_SHIFT = 48, 50, 51
AB_SUCCESSFUL_BIT, AB_UNBOOTABLE_BIT = 54, 55
AB_MASK = 0xFF << 48
CHROMEOS_KERNEL = "FE3A2A5D-4F32-41A7-B725-ACCC3285A309"


@dataclass(frozen=True)
class AbFlags:
    """The Android/Qualcomm A/B slot bits 48-55 of an attribute field."""

    priority: int
    active: bool
    retry_count: int
    successful: bool
    unbootable: bool

    @classmethod
    def from_attributes(cls, attributes: int) -> AbFlags:
        return cls(priority=(attributes >> AB_PRIORITY_SHIFT) & 3,
                   active=bool(attributes >> AB_ACTIVE_BIT & 1),
                   retry_count=(attributes >> AB_RETRY_SHIFT) & 7,
                   successful=bool(attributes >> AB_SUCCESSFUL_BIT & 1),
                   unbootable=bool(attributes >> AB_UNBOOTABLE_BIT & 1))


def decode_attributes(attributes: int, type_guid: str = "") -> tuple[str, ...]:
    """Names of the set attribute bits, e.g. ``("ab_priority=3", "ab_active")``.

    Bits 48-55 are read as the Qualcomm A/B flags (as ChromeOS priority/tries/successful for
    ChromeOS kernel partitions), bits 60-63 as Microsoft flags for basic-data partitions.
    Any other set bit is listed as ``bit<N>``.
    """
    names = [name for bit, name in _COMMON_BITS.items() if attributes >> bit & 1]
    known = set(_COMMON_BITS)
    guid = type_guid.upper()
    if guid == MS_BASIC_DATA:
        names += [name for bit, name in _MS_BITS.items() if attributes >> bit & 1]
        known |= set(_MS_BITS)
    if guid == CHROMEOS_KERNEL:
        names += _chromeos_names(attributes)
        known |= set(range(48, 57))
    elif attributes & AB_MASK:
        names += _ab_names(AbFlags.from_attributes(attributes))
        known |= set(range(48, 56))
    names += [f"bit{bit}" for bit in range(64) if attributes >> bit & 1 and bit not in known]
    return tuple(names)


def _ab_names(ab: AbFlags) -> list[str]:
    return ([f"ab_priority={ab.priority}"] if ab.priority else []) + \
        (["ab_active"] if ab.active else []) + \
        ([f"ab_retry={ab.retry_count}"] if ab.retry_count else []) + \
        (["ab_successful"] if ab.successful else []) + \
        (["ab_unbootable"] if ab.unbootable else [])


def _chromeos_names(attributes: int) -> list[str]:
    # ChromeOS kernel: priority 48-51, tries 52-55, successful 56 (spec section 2, secondary)
    prio, tries = attributes >> 48 & 15, attributes >> 52 & 15
    return ([f"cros_priority={prio}"] if prio else []) + \
        ([f"cros_tries={tries}"] if tries else []) + \
        (["cros_successful"] if attributes >> 56 & 1 else [])
