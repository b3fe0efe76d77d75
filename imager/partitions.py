"""Finding a partition of an image by name (for extract and show), whatever the image format."""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

from formats.errors import FormatError
from imager.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionSpan:
    """A partition's name and sector range (``last_lba`` inclusive, as in GPT)."""

    name: str
    first_lba: int
    last_lba: int

    @property
    def count_sectors(self) -> int:
        return self.last_lba - self.first_lba + 1


def image_partitions(reader: Any) -> list[PartitionSpan]:
    """The image's partitions: parsed from the image's own sectors when the table layer is
    installed, otherwise from the manifest's recorded table."""
    try:
        from imager.image.source import ImageAsSource
        from imager.table import read_table
    except ImportError:
        read_table = None
    if read_table is not None:
        try:
            table = read_table(ImageAsSource(reader))
            return [PartitionSpan(p.name, p.first_lba, p.last_lba) for p in table.partitions]
        except FormatError as err:
            log.warning("cannot parse the image's partition table: %s", err)
    manifest = getattr(reader, "manifest", None)
    parts = (getattr(manifest, "table", None) or {}).get("partitions", [])
    out = []
    for p in parts:
        if isinstance(p, dict) and isinstance(p.get("first_lba"), int) \
                and isinstance(p.get("last_lba"), int):
            out.append(PartitionSpan(str(p.get("name", "")), p["first_lba"], p["last_lba"]))
    return out


def find_one(parts: list[PartitionSpan], pattern: str) -> PartitionSpan:
    """The single partition whose name is ``pattern`` (or the only one its glob matches).

    Raises:
        UsageError: no match, or a glob matching several.
    """
    exact = [p for p in parts if p.name == pattern]
    hits = exact or [p for p in parts if fnmatch.fnmatchcase(p.name, pattern)]
    names = ", ".join(p.name for p in parts) or "none"
    if not hits:
        raise UsageError(f"no partition named {pattern!r} (partitions: {names})")
    if len(hits) > 1:
        raise UsageError(f"{pattern!r} matches {len(hits)} partitions: "
                         f"{', '.join(p.name for p in hits)}")
    return hits[0]
