"""Exporting any image (or one partition of it) as Android sparse file(s): ``write_simg``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from formats.extent import Extent, Kind
from imager.errors import UsageError
from imager.image.sparse_writer import SimgEncoder
from imager.prefetch import ahead

PREFETCH = 8   # pieces in flight between the reader thread and the encoder (~8 chunks at most)


def export_range(reader: Any, partition: str | None) -> tuple[int, int]:
    """(first LBA, sector count) of the whole image or of partition ``partition``.

    Raises:
        UsageError: no partition of that name, or no table layer to find it.
    """
    if partition is None:
        return 0, reader.sector_count
    from formats.table import find_partition
    from imager.image.source import ImageAsSource
    from imager.table import read_table

    table = read_table(ImageAsSource(reader))
    part = find_partition(table, partition)
    if part is None:
        names = ", ".join(p.name for p in table.partitions) or "none"
        raise UsageError(f"no partition named {partition!r} in the image (partitions: {names})")
    return part.first_lba, part.count_sectors


def image_extents(reader: Any, lo: int, hi: int
                  ) -> Iterator[tuple[Extent, bytes | memoryview | None]]:
    """(extent, data) in LBA order over ``[lo, hi)``: data (chunk-verified) for DATA only.

    Uses the reader's sector-precise ``extents()`` map when it has one (UNREAD sectors inside a
    DATA chunk stay UNREAD), else the chunk kinds. One thread reads (and verifies) up to
    ``PREFETCH`` pieces ahead of the caller, so reading/decompressing overlaps the caller's
    encoding and writing (both release the GIL); only that thread touches the reader meanwhile.
    """
    return ahead(_image_extents(reader, lo, hi), PREFETCH, "export-read")


def _image_extents(reader: Any, lo: int, hi: int
                   ) -> Iterator[tuple[Extent, bytes | memoryview | None]]:
    fine = getattr(reader, "extents", None)
    overlay = [e for e in fine() if e.end_lba > lo and e.start_lba < hi] if fine else None
    j = 0
    for chunk in reader.chunks():
        ext = chunk.extent
        start, end = max(lo, ext.start_lba), min(hi, ext.end_lba)
        if start >= end:
            continue
        parts = [Extent(start, end - start, ext.kind, ext.fill)]
        if overlay is not None:
            while j < len(overlay) and overlay[j].end_lba <= start:
                j += 1
            parts = _clip(overlay, j, start, end)
        data = None
        if any(p.kind is Kind.DATA for p in parts):
            data = memoryview(reader.read_chunk(chunk)) if ext.kind is Kind.DATA else \
                memoryview(reader.read(start, end - start))
        base = ext.start_lba if ext.kind is Kind.DATA else start
        for p in parts:
            piece = None
            if p.kind is Kind.DATA and data is not None:
                ss = reader.sector_size
                piece = data[(p.start_lba - base) * ss:(p.end_lba - base) * ss]
            yield p, piece


def _clip(overlay: list[Extent], j: int, start: int, end: int) -> list[Extent]:
    out = []
    while j < len(overlay) and overlay[j].start_lba < end:
        e = overlay[j]
        s, t = max(start, e.start_lba), min(end, e.end_lba)
        if s < t:
            out.append(Extent(s, t - s, e.kind, e.fill))
        j += 1
    return out


def write_simg(reader: Any, out_path: str, *, partition: str | None = None,
               max_size: int | None = None, crc: bool = False, block_size: int = 4096,
               progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Export ``reader`` (or one partition of it) as Android sparse file(s).

    Args:
        max_size: split into pieces of at most this many bytes (fastboot max-download-size).
        crc: append a CRC32 chunk to every piece.
        progress: called with (bytes done, bytes total).
    Returns:
        The written paths: ``out_path``, or ``out.0.simg``, ``out.1.simg``, ... when split.
    Raises:
        UsageError: bad block size / max size, unknown partition.
        ChecksumMismatch: a chunk of the image does not match its check value.
    """
    lo, count = export_range(reader, partition)
    encoder = SimgEncoder(out_path, sector_size=reader.sector_size, sector_count=count,
                          origin_lba=lo, block_size=block_size, crc=crc, max_size=max_size)
    ss = reader.sector_size
    try:
        for ext, data in image_extents(reader, lo, lo + count):
            encoder.write(ext, data)
            if progress:
                progress((ext.end_lba - lo) * ss, count * ss)
        return encoder.close()
    except BaseException:
        encoder.abort()
        raise
