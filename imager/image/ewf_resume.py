"""Resuming an interrupted E01 acquisition (EwfSink.reopen / EwfSink.replay).

A checkpoint's "offset" counts the bytes of every finished segment plus the committed part of
the open one. Reopening deletes later segments, cuts the open one at that point, re-reads its
finished sections (header2, volume, tables), and rebuilds the open sectors section's table by
walking its chunks (a zlib stream ends where zlib says; a raw chunk is one chunk + Adler-32,
checked). Replay then decodes every committed chunk (checked), feeds the MD5/SHA-1 again and
hands the data back in the pipeline's chunks, so the pipeline re-checks them against its
journal. Resuming needs pipeline chunks that hold whole EWF chunks (the default 4 MiB does).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from formats import ewf, ewf_chunk
from formats.errors import FormatError
from formats.ewf_header import parse_header2
from imager.errors import BadInput

LEVEL_NAMES = {ewf.LEVEL_NONE: "none", ewf.LEVEL_FAST: "fast", ewf.LEVEL_BEST: "best"}
ZEROS = bytes(ewf.DESCRIPTOR_SIZE)


@dataclass
class _Walk:
    """What one segment holds up to a point: finished tables and the open sectors section."""

    tables: list[tuple[int, tuple[int, ...], int]] = field(default_factory=list)  # base, entries, end
    header2: bytes = b""
    volume: bytes = b""
    open_sectors: int | None = None


def _segments(base: str) -> list[str]:
    paths, n = [], 1
    while os.path.exists(f"{base}.{ewf.segment_extension(n)}"):
        paths.append(f"{base}.{ewf.segment_extension(n)}")
        n += 1
    return paths


def _walk(fd: int, end: int, path: str) -> _Walk:
    """Follow the sections of ``fd`` up to ``end`` (or its next/done section)."""
    out, offset, sectors_end = _Walk(), ewf.FILE_HEADER_SIZE, None
    while offset < end:
        raw = os.pread(fd, ewf.DESCRIPTOR_SIZE, offset)
        if raw == ZEROS:                       # the placeholder of the open sectors section
            out.open_sectors = offset
            return out
        desc = ewf.parse_section_descriptor(raw, offset)
        if desc.type in ("next", "done"):
            return out
        if desc.type == "sectors" and offset + desc.size >= end:
            out.open_sectors = offset          # it was closed after the checkpoint
            return out
        payload = os.pread(fd, min(desc.size, 1 << 26) - ewf.DESCRIPTOR_SIZE,
                           offset + ewf.DESCRIPTOR_SIZE)
        if desc.type == "header2" and not out.header2:
            out.header2 = payload
        elif desc.type == "volume":
            out.volume = payload
        elif desc.type == "sectors":
            sectors_end = offset + desc.size
        elif desc.type == "table":
            table = ewf.parse_table(payload, f"{path}: table at {offset}")
            out.tables.append((table.base_offset, table.entries, sectors_end or offset))
        if desc.next_offset <= offset:
            raise FormatError(f"{path}: section at {offset} points back to {desc.next_offset}")
        offset = desc.next_offset
    return out


def _scan_open(fd: int, start: int, end: int, size: int, path: str) -> list[int]:
    """Table entries of the chunks in [start, end) of the open sectors section."""
    entries, pos = [], start + ewf.DESCRIPTOR_SIZE
    while pos < end:
        buf = os.pread(fd, min(end - pos, size + size // 64 + 1024), pos)
        length, compressed = _chunk_length(buf, size)
        if length is None:
            raise BadInput(f"{path}: no complete chunk at byte {pos}; cannot resume this set")
        entries.append(ewf.table_entry(pos - start, compressed))
        pos += length
    return entries


def _chunk_length(buf: bytes, size: int) -> tuple[int | None, bool]:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(buf, size + 1)
    except zlib.error:
        data = b""
    if inflater.eof and len(data) == size:
        return len(buf) - len(inflater.unused_data), True
    if len(buf) >= size + 4 and int.from_bytes(buf[size:size + 4], "little") == \
            ewf.adler32(buf[:size]):
        return size + 4, False
    return None, False


def _locate(paths: list[str], offset: int) -> tuple[int, int]:
    """(index of the open segment, offset inside it) for a checkpoint offset."""
    before = 0
    for index, path in enumerate(paths):
        size = os.path.getsize(path)
        if offset <= before + size:
            return index, offset - before
        before += size
    raise BadInput(f"{paths[-1] if paths else 'E01 set'}: {before} bytes in the set, but the "
                   f"journal says {offset} are committed")


def reopen(cls: Any, path: str, offset: int, *, sector_size: int, sector_count: int,
           chunk_sectors: int | None = None, **kw: Any) -> Any:
    """An EwfSink continuing the set at ``path`` after its committed ``offset``."""
    from imager.image.ewf_set import segment_base

    base = segment_base(path)
    paths = _segments(base)
    if offset == 0 or not paths:
        return cls(path, sector_size=sector_size, sector_count=sector_count, overwrite=True,
                   **kw)
    index, local = _locate(paths, offset)
    for stale in paths[index + 1:]:
        os.unlink(stale)
    first = _read_first(paths[0], local if index == 0 else os.path.getsize(paths[0]))
    volume = ewf.parse_volume(first.volume)
    kw.pop("case", None)
    kw.pop("identity", None)
    sink = cls(path, sector_size=sector_size, sector_count=sector_count,
               sectors_per_chunk=volume.sectors_per_chunk, chunk_sectors=chunk_sectors,
               compression=LEVEL_NAMES.get(volume.compression_level, "fast"), _resume=True, **kw)
    sink.volume, sink.header = volume, parse_header2(first.header2)
    _continue(sink, paths[:index + 1], local)
    return sink


def _read_first(path: str, end: int) -> _Walk:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        found = _walk(fd, end, path)
    finally:
        os.close(fd)
    if not found.volume or not found.header2:
        raise BadInput(f"{path}: no volume/header2 section; cannot resume this set")
    return found


def _continue(sink: Any, paths: list[str], local: int) -> None:
    """Cut the open segment at ``local`` and set the sink's state to go on writing there."""
    sink.segments = list(paths)
    sink._closed_bytes = sum(os.path.getsize(p) for p in paths[:-1])
    file = open(paths[-1], "r+b")  # noqa: SIM115  (the sink keeps it open)
    file.truncate(local)
    walked = _walk(file.fileno(), local, paths[-1])
    closed = sum(_count_chunks(p) for p in paths[:-1]) + sum(len(t[1]) for t in walked.tables)
    entries = []
    if walked.open_sectors is not None:
        entries = _scan_open(file.fileno(), walked.open_sectors, local, sink.chunk_bytes,
                             paths[-1])
        entries, local = _drop_partial(sink, closed, entries, walked.open_sectors, local, file)
    if walked.open_sectors is not None:   # closed after the checkpoint: open it again
        file.seek(walked.open_sectors)
        file.write(ZEROS)
    file.seek(local)
    sink._file, sink._pos = file, local
    sink._sectors_at, sink._entries = walked.open_sectors, entries
    sink._chunks = closed + len(entries)
    sink._segment_has_chunks = bool(walked.tables or entries)
    sink._next_lba = min(sink._chunks * sink.volume.sectors_per_chunk, sink.sector_count)


def _drop_partial(sink: Any, closed: int, entries: list[int], sectors_at: int, local: int,
                  file: Any) -> tuple[list[int], int]:
    """Cut the EWF chunks of a pipeline chunk that was only partly written.

    A checkpoint taken when the run is stopped (Ctrl-C) can hold the first EWF chunks of a
    pipeline chunk that the journal does not count yet; the pipeline writes that chunk again,
    whole, so its head is cut off here (else replay meets a pipeline chunk it cannot finish).
    """
    spc = sink.volume.sectors_per_chunk
    per = (sink.chunk_sectors or spc) // spc
    total = closed + len(entries)
    excess = total % per
    if not excess or excess > len(entries) or total * spc >= sink.sector_count:
        return entries, local
    cut = sectors_at + (entries[-excess] & ewf.OFFSET_MASK)
    file.truncate(cut)
    return entries[:-excess], cut


def _count_chunks(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sum(len(t[1]) for t in _walk(fd, os.fstat(fd).st_size, path).tables)
    finally:
        os.close(fd)


def _locations(sink: Any) -> Iterator[tuple[str, int, int, bool]]:
    """(path, start, end, compressed) of every committed chunk, in order."""
    for number, path in enumerate(sink.segments, start=1):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            open_one = number == len(sink.segments)
            end = sink._pos if open_one else os.fstat(fd).st_size
            walked = _walk(fd, end, path)
        finally:
            os.close(fd)
        tables = list(walked.tables)
        if open_one and sink._entries:
            tables.append((sink._sectors_at, tuple(sink._entries), sink._pos))
        for base, entries, data_end in tables:
            for i, entry in enumerate(entries):
                start = base + (entry & ewf.OFFSET_MASK)
                stop = base + (entries[i + 1] & ewf.OFFSET_MASK) if i + 1 < len(entries) \
                    else data_end
                yield path, start, stop, bool(entry & ewf.COMPRESSED_FLAG)


def replay(sink: Any) -> Iterator[bytes]:
    """See EwfSink.replay."""
    if not sink._chunks:
        return
    want = (sink.chunk_sectors or sink.volume.sectors_per_chunk) * sink.sector_size
    pending = bytearray()
    for index, (path, start, stop, compressed) in enumerate(_locations(sink)):
        with open(path, "rb") as f:
            f.seek(start)
            stored = f.read(stop - start)
        size = min(sink.chunk_bytes, (sink.sector_count * sink.sector_size)
                   - index * sink.chunk_bytes)
        data, _ = ewf_chunk.decode_chunk(stored, compressed, size, index)
        sink._md5.update(data)
        sink._sha1.update(data)
        pending += data
        if len(pending) >= want:
            yield bytes(pending[:want])
            del pending[:want]
    if pending and sink._next_lba == sink.sector_count:
        yield bytes(pending)                       # the short last pipeline chunk
    elif pending:
        raise BadInput(f"{sink.path}: committed data ends inside a pipeline chunk; "
                       "cannot resume this set")
