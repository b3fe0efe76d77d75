"""Extents: what an image says about each run of sectors."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(str, enum.Enum):
    """What a run of sectors holds in an image.

    DATA, ZERO and FILL were read; UNREAD was tried and failed; NOT_ACQUIRED was excluded
    by the user. A region that was not read is never stored as if it were zero.
    """

    DATA = "data"
    ZERO = "zero"
    FILL = "fill"
    UNREAD = "unread"
    NOT_ACQUIRED = "not_acquired"

    @property
    def was_read(self) -> bool:
        return self in (Kind.DATA, Kind.ZERO, Kind.FILL)


@dataclass(frozen=True)
class Extent:
    """``count`` sectors from ``start_lba`` (count, not an inclusive end)."""

    start_lba: int
    count: int
    kind: Kind = Kind.DATA
    fill: int | None = None  # the byte value of a FILL extent

    @property
    def end_lba(self) -> int:
        """First LBA after the extent (exclusive)."""
        return self.start_lba + self.count

    def __post_init__(self) -> None:
        if self.start_lba < 0 or self.count < 0:
            raise ValueError(f"negative extent {self.start_lba}+{self.count}")
        if (self.kind is Kind.FILL) != (self.fill is not None):
            raise ValueError("fill byte goes with FILL extents only")


def merge(extents: list[Extent]) -> list[Extent]:
    """Join adjacent extents of the same kind (and fill byte); input must be sorted."""
    out: list[Extent] = []
    for ext in extents:
        if out and out[-1].end_lba == ext.start_lba and out[-1].kind is ext.kind \
                and out[-1].fill == ext.fill:
            last = out.pop()
            ext = Extent(last.start_lba, last.count + ext.count, ext.kind, ext.fill)
        out.append(ext)
    return out
