"""Verifying an image: every chunk's check value, the whole-image hashes, optionally the device.

Works on any ImageReader (native, raw, sparse, E01, snapshot): it only uses ``chunks()``,
``read_chunk()`` and, when the reader has them, ``hashes`` and ``extents()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from formats.errors import FormatError
from formats.extent import Extent, merge
from imager.errors import DeviceError
from imager.hashing import ParallelHash
from imager.prefetch import ahead

log = logging.getLogger(__name__)
PREFETCH = 4  # chunks read and checked ahead of the whole-image hash


@dataclass
class VerifyReport:
    """What verification found. ``ok`` is False on any mismatch."""

    chunks: int = 0
    bad_chunks: list[tuple[int, int, int, str]] = field(default_factory=list)  # idx, lba, n, why
    # (index -1: the manifest's recorded partition-table sectors disagree with the image)
    expected: dict[str, str] = field(default_factory=dict)
    actual: dict[str, str] = field(default_factory=dict)
    mismatches: list[tuple[int, int]] = field(default_factory=list)     # --against: LBA ranges
    source_unreadable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def hashes_ok(self) -> bool:
        return all(self.actual.get(k) == v for k, v in self.expected.items())

    @property
    def ok(self) -> bool:
        return not self.bad_chunks and self.hashes_ok and not self.mismatches


def _read_sectors(extents: list[Extent], start: int, end: int) -> list[tuple[int, int]]:
    """The ranges inside [start, end) that were read from the device (DATA/ZERO/FILL)."""
    out = []
    for e in extents:
        if e.end_lba <= start or e.start_lba >= end or not e.kind.was_read:
            continue
        out.append((max(e.start_lba, start), min(e.end_lba, end)))
    return out


def _diff(a: bytes, b: bytes, base_lba: int, ss: int) -> list[Extent]:
    bad = []
    for i in range(len(a) // ss):
        if a[i * ss:(i + 1) * ss] != b[i * ss:(i + 1) * ss]:
            bad.append(Extent(base_lba + i, 1))
    return merge(bad)


def _against(source: Any, chunk: Any, data: bytes, extents: list[Extent],
             report: VerifyReport, ss: int) -> None:
    ext = chunk.extent
    for lo, hi in _read_sectors(extents, ext.start_lba, ext.end_lba):
        try:
            src = source.read(lo, hi - lo)
        except DeviceError as err:
            log.warning("source: %s", err)
            report.source_unreadable.append((lo, hi - lo))
            continue
        off = (lo - ext.start_lba) * ss
        mine = data[off:off + (hi - lo) * ss]
        if src != mine:
            report.mismatches += [(e.start_lba, e.count) for e in _diff(src, mine, lo, ss)]


def _check_table_sectors(reader: Any, report: VerifyReport) -> None:
    """The raw partition-table sectors the manifest recorded must be the image's own."""
    manifest = getattr(reader, "manifest", None)
    ss = reader.sector_size
    for lba, raw in getattr(manifest, "table_sectors", ()) or ():
        count = len(raw) // ss
        if not count or lba + count > reader.sector_count or reader.read(lba, count) != raw:
            why = "manifest table_sectors differ from the image's sectors"
            report.bad_chunks.append((-1, lba, count, why))


def _read_chunks(reader: Any) -> Iterator[tuple[Any, bytes, FormatError | None]]:
    """(chunk, verified bytes, None) or (chunk, b"", the error) for every chunk, in order."""
    for chunk in reader.chunks():
        try:
            yield chunk, reader.read_chunk(chunk), None
        except FormatError as err:
            yield chunk, b"", err


def verify_image(reader: Any, *, against: Any = None,
                 progress: Callable[[int, int, str], None] | None = None) -> VerifyReport:
    """Check every chunk and the whole-image hashes; with ``against``, compare with a Source.

    A damaged chunk is recorded (index, LBA range, reason) and verification goes on; the
    whole-image hashes are then not comparable and are reported as mismatching. Chunks are read
    and checked by one thread ahead of this one, which hashes the whole image (both cores busy).
    """
    report = VerifyReport(expected=dict(getattr(reader, "hashes", {}) or {}))
    with ParallelHash(tuple(report.expected) or ("sha256",)) as hasher:
        return _verify(reader, report, hasher, against, progress)


def _verify(reader: Any, report: VerifyReport, hasher: ParallelHash, against: Any,
            progress: Callable[[int, int, str], None] | None) -> VerifyReport:
    extents = reader.extents() if hasattr(reader, "extents") else []
    if against is not None and (against.sector_size, against.sector_count) != \
            (reader.sector_size, reader.sector_count):
        report.mismatches.append((0, reader.sector_count))
        log.error("source geometry %dx%d differs from the image's %dx%d", against.sector_count,
                  against.sector_size, reader.sector_count, reader.sector_size)
        against = None
    total = reader.sector_count * reader.sector_size
    broken = False
    for chunk, data, err in ahead(_read_chunks(reader), PREFETCH, "verify-read"):
        report.chunks += 1
        ext = chunk.extent
        if err is not None:
            report.bad_chunks.append((chunk.index, ext.start_lba, ext.count, str(err)))
            broken = True
            continue
        if not broken:
            hasher.update(data)
        if against is not None:
            _against(against, chunk, data, extents, report, reader.sector_size)
        if progress:
            progress(ext.end_lba * reader.sector_size, total, "")
    if not broken:
        report.actual = hasher.hexdigests()
        _check_table_sectors(reader, report)
    report.mismatches = [(e.start_lba, e.count) for e in
                         merge([Extent(s, c) for s, c in sorted(report.mismatches)])]
    return report


__all__ = ["VerifyReport", "verify_image"]
