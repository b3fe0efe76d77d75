"""GNU ddrescue mapfiles: parse, validate, build, and edit block lists (specs/ddrescue-mapfile.md).

A mapfile is text: comment lines (``#``), a status line ``current_pos current_status
[current_pass]``, then block lines ``pos size status`` that are ascending, contiguous and
non-overlapping. Numbers are read as C ``%lli`` reads them (decimal, ``0x`` hex, leading-0
octal); the pass is decimal. Everything here is pure: text in, frozen dataclasses out.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from formats.errors import FormatError

MAX_VALUE = (1 << 63) - 1  # ddrescue stores positions in a signed long long
_INT = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


class MapfileError(FormatError):
    """A mapfile line that GNU ddrescue would reject (or that makes no sense)."""

    def __init__(self, line_no: int, message: str) -> None:
        where = f"mapfile line {line_no}" if line_no else "mapfile"
        super().__init__(f"{where}: {message}")
        self.line_no = line_no


class Status(str, enum.Enum):
    """The state of a block, least processed first (manual, "Mapfile structure")."""

    NON_TRIED = "?"
    NON_TRIMMED = "*"
    NON_SCRAPED = "/"
    BAD_SECTOR = "-"
    FINISHED = "+"


PHASES = frozenset("?*/-FG+")  # status-line characters: copying, trimming, ... finished


@dataclass(frozen=True)
class Block:
    """``size`` bytes from byte offset ``pos`` in state ``status``."""

    pos: int
    size: int
    status: Status

    @property
    def end(self) -> int:
        return self.pos + self.size


@dataclass(frozen=True)
class Mapfile:
    """A parsed mapfile: the status line and the block list."""

    current_pos: int
    current_status: str
    current_pass: int
    blocks: tuple[Block, ...]

    @property
    def start(self) -> int:
        return self.blocks[0].pos if self.blocks else 0

    @property
    def end(self) -> int:
        return self.blocks[-1].end if self.blocks else 0


def _strip_comment(line: str) -> str:
    # '#' starts a comment at line start or after whitespace; anywhere else it is data
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _short(text: str, limit: int = 40) -> str:
    """``text`` for an error message: a binary file's first "field" can be megabytes long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


def _number(text: str, line_no: int, what: str) -> int:
    if text.startswith("-"):
        raise MapfileError(line_no, f"{what} {_short(text)} is negative")
    if not _INT.fullmatch(text.lstrip("+")):
        raise MapfileError(line_no, f"{what} {_short(text)} is not a number")
    body = text.lstrip("+")
    value = int(body, 16) if body[:2].lower() == "0x" else int(body, 8) if body[0] == "0" \
        else int(body)
    if value > MAX_VALUE:
        raise MapfileError(line_no, f"{what} {_short(text)} is larger than {MAX_VALUE}")
    return value


def _status_line(fields: list[str], line_no: int) -> tuple[int, str, int]:
    if len(fields) not in (2, 3):
        raise MapfileError(line_no, f"status line needs 2 or 3 fields, got {len(fields)}")
    pos = _number(fields[0], line_no, "current_pos")
    if len(fields[1]) != 1 or fields[1] not in PHASES:
        raise MapfileError(line_no, f"bad current_status {_short(fields[1])}, expected one of "
                                    f"{''.join(sorted(PHASES))}")
    current_pass = 1
    if len(fields) == 3:
        if not fields[2].isdigit() or int(fields[2]) < 1 or int(fields[2]) > 1 << 31:
            raise MapfileError(line_no, f"bad current_pass {_short(fields[2])}, expected a "
                                        "decimal number >= 1")
        current_pass = int(fields[2])
    return pos, fields[1], current_pass


def _block_line(fields: list[str], line_no: int, prev_end: int | None) -> Block:
    if len(fields) != 3:
        raise MapfileError(line_no, f"block line needs 3 fields (pos size status), "
                                    f"got {len(fields)}")
    pos = _number(fields[0], line_no, "pos")
    size = _number(fields[1], line_no, "size")
    try:
        status = Status(fields[2])
    except ValueError:
        raise MapfileError(line_no, f"bad block status {_short(fields[2])}, expected one of "
                                    "? * / - +") from None
    if pos + size > MAX_VALUE:
        raise MapfileError(line_no, f"block {pos}+{size} ends past {MAX_VALUE}")
    if size <= 0:
        raise MapfileError(line_no, f"block at {pos} has size {size}; sizes must be > 0")
    if prev_end is not None and pos != prev_end:
        kind = "overlaps the previous block" if pos < prev_end else "leaves a gap after"
        raise MapfileError(line_no, f"block at {pos} {kind} (previous block ends at {prev_end})")
    return Block(pos, size, status)


def parse_mapfile(data: bytes | str) -> Mapfile:
    """Parse and validate mapfile text.

    Raises:
        MapfileError: naming the line: missing status line, bad numbers or status characters,
            overlapping, non-contiguous or empty blocks, values past 2**63-1.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as err:
            raise MapfileError(0, f"not ASCII text (byte {err.start})") from None
    status: tuple[int, str, int] | None = None
    blocks: list[Block] = []
    empty_line = None
    for line_no, raw in enumerate(data.splitlines(), 1):
        fields = _strip_comment(raw).split()
        if not fields:
            continue
        if status is None:
            status = _status_line(fields, line_no)
            continue
        if empty_line is not None:
            raise MapfileError(line_no, f"block after the empty-map line {empty_line}")
        if len(fields) == 3 and not blocks and _is_empty_map(fields):
            empty_line = line_no
            continue
        blocks.append(_block_line(fields, line_no, blocks[-1].end if blocks else None))
    if status is None:
        raise MapfileError(0, "no status line (current_pos current_status current_pass)")
    return Mapfile(status[0], status[1], status[2], tuple(blocks))


def _is_empty_map(fields: list[str]) -> bool:
    # "0 0 ?" (any spelling of zero) is how ddrescue writes an empty map
    return fields[2] == "?" and all(_INT.fullmatch(f) and int(f, 0 if f[:2].lower() == "0x"
                                                             else 8 if f[0] == "0" else 10) == 0
                                    for f in fields[:2])


def build_mapfile(mapfile: Mapfile, comments: Iterable[str] = ()) -> str:
    """The mapfile text as GNU ddrescue writes it (``comments`` become ``# `` lines first)."""
    lines = [f"# {c}" for c in comments]
    lines.append("# current_pos  current_status  current_pass")
    lines.append(f"0x{mapfile.current_pos:08X}     {mapfile.current_status}"
                 f"               {mapfile.current_pass}")
    lines.append("#      pos        size  status")
    lines += [f"0x{b.pos:08X}  0x{b.size:08X}  {b.status.value}" for b in mapfile.blocks]
    return "\n".join(lines) + "\n"


def check_domain(mapfile: Mapfile, size: int) -> None:
    """Raise MapfileError unless the blocks cover exactly ``[0, size)`` (or are empty)."""
    if mapfile.blocks and (mapfile.start != 0 or mapfile.end > size):
        raise MapfileError(0, f"blocks cover {mapfile.start}..{mapfile.end}, but the source "
                              f"has {size} bytes")


def merge_blocks(blocks: Iterable[Block]) -> list[Block]:
    """Join adjacent blocks of equal status (input ascending and contiguous)."""
    out: list[Block] = []
    for b in blocks:
        if out and out[-1].status is b.status and out[-1].end == b.pos:
            out[-1] = replace(out[-1], size=out[-1].size + b.size)
        else:
            out.append(b)
    return out


def span(blocks: list[Block], pos: int, end: int) -> tuple[int, int]:
    """Indices ``lo, hi``: ``blocks[lo:hi]`` are the blocks that overlap ``[pos, end)``."""
    lo = max(0, bisect.bisect_right(blocks, pos, key=lambda b: b.pos) - 1)
    if lo < len(blocks) and blocks[lo].end <= pos:
        lo += 1
    hi = bisect.bisect_left(blocks, end, key=lambda b: b.pos)
    return lo, max(lo, hi)


def set_status(blocks: list[Block], pos: int, size: int, status: Status) -> list[Block]:
    """A new block list with ``[pos, pos+size)`` set to ``status`` (split and merged).

    ``blocks`` must be ascending and non-overlapping; only the neighbourhood of the range is
    rebuilt (bisection), so marking one sector costs O(log n) Python steps.
    """
    if size <= 0:
        return list(blocks)
    end = pos + size
    lo, hi = span(blocks, pos, end)
    mid: list[Block] = []
    if lo < hi and blocks[lo].pos < pos:
        mid.append(Block(blocks[lo].pos, pos - blocks[lo].pos, blocks[lo].status))
    mid.append(Block(pos, size, status))
    if lo < hi and blocks[hi - 1].end > end:
        mid.append(Block(end, blocks[hi - 1].end - end, blocks[hi - 1].status))
    lo2, hi2 = max(0, lo - 1), min(len(blocks), hi + 1)  # neighbours may merge with us
    return blocks[:lo2] + merge_blocks(blocks[lo2:lo] + mid + blocks[hi:hi2]) + blocks[hi2:]


def extend_domain(blocks: list[Block], size: int) -> list[Block]:
    """Fill ``[0, size)`` around ``blocks`` with non-tried blocks, as ddrescue does."""
    out: list[Block] = []
    pos = 0
    for b in blocks:
        if b.pos > pos:
            out.append(Block(pos, b.pos - pos, Status.NON_TRIED))
        out.append(b)
        pos = b.end
    if pos < size:
        out.append(Block(pos, size - pos, Status.NON_TRIED))
    return merge_blocks(out)


def totals(blocks: Iterable[Block]) -> dict[Status, int]:
    """Bytes in each state (every state present, zero when absent)."""
    out = dict.fromkeys(Status, 0)
    for b in blocks:
        out[b.status] += b.size
    return out


def with_status(blocks: Iterable[Block], *states: Status) -> Iterator[Block]:
    """The blocks whose status is one of ``states``, in order."""
    return (b for b in blocks if b.status in states)
