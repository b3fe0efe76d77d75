"""Reading both GPT copies from a Source and choosing which to trust (specs/gpt-mbr.md section 6).

Every failed check becomes a reason string; a caller that finds no usable copy reports them
all at once. Used by imager/table.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from formats.errors import BadMagic, ChecksumMismatch, FormatError, InvalidField
from formats.gpt import (
    GptEntry,
    GptHeader,
    check_array_crc,
    check_gpt_header,
    parse_entry_array,
    parse_gpt_header,
)
from imager.errors import OutOfBounds, ReadError

log = logging.getLogger(__name__)


class SectorView:
    """A Source seen with a larger logical sector size (4096 over a 512-byte file)."""

    def __init__(self, source: object, sector_size: int) -> None:
        self.source = source
        self.sector_size = sector_size
        self.factor = sector_size // source.sector_size  # type: ignore[attr-defined]
        self.sector_count = source.sector_count // self.factor  # type: ignore[attr-defined]

    def read(self, lba: int, count: int = 1) -> bytes:
        """``count`` sectors of this view's size; ReadError/OutOfBounds propagate."""
        f = self.factor
        return self.source.read(lba * f, count * f)  # type: ignore[attr-defined]

    def read_or_none(self, lba: int) -> bytes | None:
        """One sector, or None when it cannot be read (for the EBR walker)."""
        try:
            return self.read(lba)
        except (ReadError, OutOfBounds) as err:
            log.debug("LBA %d unreadable: %s", lba, err)
            return None


@dataclass
class GptCopy:
    """What was found at one header location."""

    label: str                       # "primary" | "backup"
    lba: int
    header: GptHeader | None = None  # set when the header passed every check
    array: bytes | None = None       # raw array bytes as read (CRC not necessarily ok)
    array_ok: bool = False
    problem: str = ""                # "" when fully valid
    missing: bool = False            # no signature at all

    @property
    def ok(self) -> bool:
        return self.header is not None and self.array_ok

    @property
    def health(self) -> str:
        if self.ok:
            return "ok"
        return "missing" if self.missing else f"bad: {self.problem}"

    @property
    def reason(self) -> str:
        return f"{self.label} at LBA {self.lba} ({self.problem})"


def read_copy(view: SectorView, lba: int, label: str) -> GptCopy:
    """Read and check the header at ``lba`` and the array it points to."""
    copy = GptCopy(label, lba)
    try:
        sector = view.read(lba)
    except (ReadError, OutOfBounds, FormatError) as err:  # FormatError: a damaged image chunk
        copy.problem = f"unreadable: {err}"
        return copy
    try:
        header = parse_gpt_header(sector, lba)
        check_gpt_header(header, lba=lba, sector_count=view.sector_count,
                         sector_size=view.sector_size)
    except BadMagic:
        copy.missing, copy.problem = True, "bad magic"
        return copy
    except (ReadError, OutOfBounds) as err:
        copy.problem = f"unreadable: {err}"
        return copy
    except FormatError as err:
        copy.problem = describe(err)
        return copy
    copy.header = header
    try:
        copy.array = view.read(header.entry_lba, header.array_sectors(view.sector_size))
    except (ReadError, OutOfBounds, FormatError) as err:
        copy.problem = f"entry array unreadable: {err}"
        return copy
    try:
        check_array_crc(header, copy.array, header.entry_lba)
        copy.array_ok = True
    except ChecksumMismatch as err:
        copy.problem = describe(err)
    return copy


def describe(err: FormatError) -> str:
    """A short reason for a failed check (the place is said by the caller)."""
    if isinstance(err, ChecksumMismatch) and isinstance(err.expected, int) \
            and isinstance(err.actual, int):
        what = "header" if err.what == "gpt header" else "entry array"
        return (f"{what} CRC mismatch: stored {err.expected:#010x}, "
                f"computed {err.actual:#010x}")
    if isinstance(err, InvalidField):
        return f"invalid {err.field} {err.value!r}: {err.reason}"
    return str(err)


@dataclass
class GptRead:
    """Both copies, the header + entries chosen, and what the reader noticed."""

    primary: GptCopy
    backup: GptCopy
    header: GptHeader | None = None
    entries: tuple[GptEntry, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def signature_seen(self) -> bool:
        return not (self.primary.missing and self.backup.missing)

    @property
    def reasons(self) -> list[str]:
        return [self.primary.reason, self.backup.reason]


def read_gpt(view: SectorView) -> GptRead:
    """Read primary and backup, choose one, compare them; ``header`` is None if none fits."""
    primary = read_copy(view, 1, "primary")
    backup = _read_backup(view, primary)
    result = GptRead(primary, backup)
    chosen = _choose(result)
    if chosen is None:
        return result
    header, array = chosen
    result.header = header
    result.entries = parse_entry_array(array, header.entry_count, header.entry_size)
    if primary.ok and backup.ok:
        result.warnings += compare_copies(primary.header, backup.header,  # type: ignore[arg-type]
                                          view.sector_count)
    return result


def _read_backup(view: SectorView, primary: GptCopy) -> GptCopy:
    last = view.sector_count - 1
    alt = primary.header.alternate_lba if primary.header else last
    if not 1 < alt <= last:
        alt = last
    backup = read_copy(view, alt, "backup")
    if not backup.ok and alt != last:
        at_end = read_copy(view, last, "backup")
        if at_end.ok:
            return at_end
    return backup


def _choose(r: GptRead) -> tuple[GptHeader, bytes] | None:
    """Primary if valid, else backup, else a valid header with the other copy's array."""
    p, b = r.primary, r.backup
    if p.ok:
        if not b.ok:
            r.warnings.append(f"backup GPT {b.reason.removeprefix('backup ')}; "
                              "using the primary")
        return p.header, p.array  # type: ignore[return-value]
    if b.ok:
        r.warnings.append(f"primary GPT {p.reason.removeprefix('primary ')}; "
                          f"using the backup at LBA {b.lba}")
        return b.header, b.array  # type: ignore[return-value]
    for mine, other in ((p, b), (b, p)):
        if mine.header is not None and other.array is not None \
                and len(other.array) >= mine.header.array_bytes:
            try:
                check_array_crc(mine.header, other.array)
            except ChecksumMismatch:
                continue
            r.warnings.append(f"{mine.label} GPT header used with the {other.label}'s entry "
                              f"array: {p.reason}; {b.reason}")
            return mine.header, other.array
    return None


_COMPARED = ("first_usable_lba", "last_usable_lba", "disk_guid", "entry_count", "entry_size",
             "entry_array_crc32")


def compare_copies(p: GptHeader, b: GptHeader, sector_count: int) -> list[str]:
    """Mismatches between two valid headers (Linux efi.c compare_gpts), as warnings."""
    out = []
    if p.my_lba != b.alternate_lba or p.alternate_lba != b.my_lba:
        out.append(f"GPT copies do not point at each other: primary {p.my_lba}->"
                   f"{p.alternate_lba}, backup {b.my_lba}->{b.alternate_lba}")
    for name in _COMPARED:
        mine, theirs = getattr(p, name), getattr(b, name)
        if mine != theirs:
            out.append(f"GPT copies differ in {name}: primary {mine!r}, backup {theirs!r}")
    if b.my_lba != sector_count - 1:
        out.append(f"backup GPT header is at LBA {b.my_lba}, not at the last LBA "
                   f"{sector_count - 1} (image copied to a bigger disk?)")
    return out
