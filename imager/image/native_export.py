"""``imager export --to zst``: any ImageReader rewritten as a native image (stock-zstd readable).

Every chunk is read (and so verified) from the source reader and written as one frame; the
manifest is rebuilt from what was written (kinds, sha256 per DATA chunk) and keeps the
source's metadata (identity, tables, hashes, UNREAD/NOT_ACQUIRED, case) when it has a manifest.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from formats.extent import Kind
from formats.manifest import KindRun, Manifest, runs_append
from imager.errors import UsageError
from imager.hashing import CHUNK_CHECK, chunk_digest
from imager.image.native import NativeSink


def export_zst(reader: Any, out_path: str, **_options: Any) -> None:
    """Write ``reader``'s image to ``out_path`` as a native image.

    Raises:
        UsageError: ``out_path`` exists, or the reader's chunks are not on a fixed grid.
        ChecksumMismatch: a damaged chunk in the source (nothing after it is written).
    """
    if os.path.exists(out_path):
        raise UsageError(f"{out_path} already exists; refusing to overwrite it")
    cs = reader.chunk_sectors
    sink = NativeSink(out_path, sector_size=reader.sector_size,
                      sector_count=reader.sector_count, chunk_sectors=cs)
    runs: list[KindRun] = []
    checks: list[str] = []
    try:
        for index, chunk in enumerate(reader.chunks()):
            ext = chunk.extent
            if ext.start_lba != index * cs or (ext.count != cs and ext.end_lba != reader.sector_count):
                raise UsageError(f"chunk {index} at LBA {ext.start_lba}+{ext.count} is not on the "
                                 f"{cs}-sector grid a native image needs")
            data = reader.read_chunk(chunk)
            # UNREAD/NOT_ACQUIRED chunks stay what they are (zero frames), as acquire writes them
            sink.write(ext, data if ext.kind is Kind.DATA else None)
            runs_append(runs, index, ext.kind, ext.fill)
            if ext.kind is Kind.DATA:
                checks.append(chunk_digest(CHUNK_CHECK, data))
    except BaseException:
        sink.close()
        os.unlink(out_path)
        raise
    sink.finalize(_manifest(reader, runs, checks))


def _manifest(reader: Any, runs: list[KindRun], checks: list[str]) -> Manifest:
    base = getattr(reader, "manifest", None)
    fields = {"sector_size": reader.sector_size, "sector_count": reader.sector_count,
              "chunk_sectors": reader.chunk_sectors, "chunk_runs": tuple(runs),
              "chunk_checks": tuple(checks), "chunk_check": CHUNK_CHECK, "image_format": "native"}
    if isinstance(base, Manifest):
        return dataclasses.replace(base, **fields)
    unread = [e for e in getattr(reader, "extents", list)() if e.kind is Kind.UNREAD]
    return Manifest(**fields, unread=tuple((e.start_lba, e.count) for e in unread))
