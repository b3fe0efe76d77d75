"""Android sparse images (``.simg``) as an ImageReader.

Opening walks every chunk header once (validating the whole file, never reading RAW payloads)
and keeps one checkpoint per ``CHECKPOINT_EVERY`` chunks, so memory stays a small fraction of
the file size whatever the header claims. Random reads walk at most one window of chunks from
the nearest checkpoint (the last windows are cached, so sequential reads walk each once).

Kinds: RAW -> DATA; FILL of zero -> ZERO; FILL of one repeated byte -> FILL(byte); any other
fill word -> DATA (synthesised); DONT_CARE -> NOT_ACQUIRED ("leave the target as it is", so a
restore never writes it). CRC32 chunks are verified by ``read_chunk`` when chunks are read in
order (a full verify pass), since they cover the whole expanded prefix.

``acquire --format simg`` writes the manifest beside the image (IMAGE.json, as for raw images);
when it is there the reader exposes ``manifest`` and ``hashes`` (so ``verify`` checks the
whole-image hashes) and trims the padding of the last sparse block off ``sector_count``.
"""

from __future__ import annotations

import bisect
import logging
import os
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from formats.errors import ChecksumMismatch
from formats.extent import Extent, Kind
from formats.manifest import Manifest
from formats.sparse import (
    CHUNK_CRC32,
    CHUNK_DONT_CARE,
    CHUNK_FILL,
    CHUNK_RAW,
    SparseChunk,
    SparseHeader,
    WalkState,
    check_crc,
    iter_chunks,
    parse_sparse_header,
)
from imager.errors import BadInput, OutOfBounds
from imager.image.base import Chunk
from imager.image.sidecar import load_sidecar

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 64          # chunks per index window
WINDOW_CACHE = 4               # decoded windows kept
READ_BUFFER = 1 << 16          # header-walk read size
CHUNK_BYTES = 4 << 20          # Chunk pieces are at most this long, aligned to it
CRC_PREFIX = "crc32:"


class _Pread:
    """``read_at`` over a file descriptor with one read-ahead buffer (headers are small)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.base, self.buf = fd, 0, b""

    def __call__(self, offset: int, size: int) -> bytes:
        end = offset + size
        if not (self.base <= offset and end <= self.base + len(self.buf)):
            self.base, self.buf = offset, os.pread(self.fd, max(size, READ_BUFFER), offset)
        return self.buf[offset - self.base:end - self.base]


def chunk_kind(chunk: SparseChunk) -> tuple[Kind, int | None]:
    """The Extent kind (and fill byte) a RAW/FILL/DONT_CARE record stands for."""
    if chunk.chunk_type == CHUNK_RAW:
        return Kind.DATA, None
    if chunk.chunk_type == CHUNK_DONT_CARE:
        return Kind.NOT_ACQUIRED, None
    word = chunk.value or bytes(4)
    if word == bytes(4):
        return Kind.ZERO, None
    if word == word[:1] * 4:
        return Kind.FILL, word[0]
    return Kind.DATA, None


class SparseReader:
    """An Android sparse file seen as sectors of ``sector_size`` bytes."""

    format_name = "simg"

    def __init__(self, path: str, sector_size: int | None = None, **_options: Any) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise BadInput(f"{path}: cannot open: {err.strerror}") from err
        try:
            self._open(sector_size)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, sector_size: int | None) -> None:
        self.file_size = os.fstat(self._fd).st_size
        self.header: SparseHeader = parse_sparse_header(os.pread(self._fd, 28, 0))
        self.manifest = load_sidecar(self.path)
        if sector_size is None:   # a sparse file has no sector size; its manifest may say
            sector_size = self.manifest.sector_size if self.manifest else 512
        blk = self.header.blk_sz
        if sector_size <= 0 or blk % sector_size:
            raise BadInput(f"{self.path}: sparse block size {blk} is not a multiple of the "
                           f"{sector_size}-byte sector size")
        self.sector_size = sector_size
        self.sectors_per_block = blk // sector_size
        self.sector_count = self.header.total_blks * self.sectors_per_block
        self.chunk_sectors = max(1, CHUNK_BYTES // blk) * self.sectors_per_block
        self._build_index()
        if self.manifest is not None:
            self._adopt(self.manifest)
        self._windows: OrderedDict[int, list[SparseChunk]] = OrderedDict()
        self._crc_state: tuple[int, int] | None = None  # (next lba, running crc)

    def _build_index(self) -> None:
        self._cp_block, self._cp_offset = array("q"), array("q")
        self.type_counts: dict[int, int] = {}
        for ch in iter_chunks(self.header, _Pread(self._fd), self.file_size):
            if ch.index % CHECKPOINT_EVERY == 0:
                self._cp_block.append(ch.start_block)
                self._cp_offset.append(ch.header_offset)
            self.type_counts[ch.chunk_type] = self.type_counts.get(ch.chunk_type, 0) + 1
        self.has_crc = CHUNK_CRC32 in self.type_counts or self.header.image_checksum != 0

    def _adopt(self, m: Manifest) -> None:
        """Check IMAGE.json describes this image; take its true sector count."""
        spb = self.sectors_per_block
        if m.sector_size != self.sector_size or \
                not (self.header.total_blks - 1) * spb < m.sector_count <= self.sector_count:
            raise BadInput(f"{self.path}.json describes {m.sector_count} sectors of "
                           f"{m.sector_size} bytes; the sparse image has {self.sector_count} "
                           f"of {self.sector_size}")
        self.sector_count = m.sector_count  # the sparse file pads the last block

    @property
    def plan_notes(self) -> tuple[str, ...]:
        """What a restore plan should say about this image (DONT_CARE is never written)."""
        if CHUNK_DONT_CARE not in self.type_counts:
            return ()
        return (("sparse DONT_CARE ranges (listed as not_acquired) are left as they are on the "
                "target: a sparse image does not say what belongs there"),)

    @property
    def hashes(self) -> dict[str, str]:
        """Whole-image hashes from IMAGE.json (empty without one)."""
        return dict(self.manifest.hashes) if self.manifest else {}

    def _window(self, w: int) -> list[SparseChunk]:
        win = self._windows.get(w)
        if win is None:
            start = WalkState(w * CHECKPOINT_EVERY, self._cp_offset[w], self._cp_block[w])
            win = []
            for ch in iter_chunks(self.header, _Pread(self._fd), self.file_size, start):
                win.append(ch)
                if len(win) == CHECKPOINT_EVERY:
                    break
            self._windows[w] = win
            if len(self._windows) > WINDOW_CACHE:
                self._windows.popitem(last=False)
        self._windows.move_to_end(w)
        return win

    def _records_from(self, block: int) -> Iterator[SparseChunk]:
        w = max(0, bisect.bisect_right(self._cp_block, block) - 1)
        while w < len(self._cp_block):
            yield from self._window(w)
            w += 1

    def read(self, lba: int, count: int) -> bytes:
        """``count`` sectors from ``lba`` of the expanded image (DONT_CARE reads as zeros)."""
        if lba < 0 or count < 0 or lba + count > self.sector_count:
            raise OutOfBounds(lba, count, self.sector_count)
        return self._read(lba, count)

    def _read(self, lba: int, count: int) -> bytes:
        start, end = lba * self.sector_size, (lba + count) * self.sector_size
        blk, parts = self.header.blk_sz, []
        for ch in self._records_from(start // blk):
            c_start, c_end = ch.start_block * blk, ch.end_block * blk
            if c_end <= start:
                continue
            if c_start >= end:
                break
            lo, hi = max(start, c_start), min(end, c_end)
            parts.append(self._expand(ch, lo - c_start, hi - lo))
        return b"".join(parts)

    def _expand(self, ch: SparseChunk, offset: int, size: int) -> bytes:
        """``size`` expanded bytes of record ``ch`` from byte ``offset`` inside it."""
        if ch.chunk_type == CHUNK_RAW:
            data = os.pread(self._fd, size, ch.data_offset + offset)
            if len(data) != size:  # the file shrank after it was indexed
                raise BadInput(f"{self.path}: short read at offset {ch.data_offset + offset}")
            return data
        if ch.chunk_type == CHUNK_FILL:
            word = ch.value or bytes(4)
            rot = offset % 4
            return ((word[rot:] + word[:rot]) * (size // 4 + 1))[:size]
        return bytes(size)

    def chunks(self) -> Iterator[Chunk]:
        """Pieces in LBA order: one kind each, never crossing a ``chunk_sectors`` boundary.

        The piece that ends where a CRC32 record stands carries ``check="crc32:XXXXXXXX"``
        (the CRC of the expanded image up to its end), verified by ``read_chunk``.
        """
        pending: list[Chunk] = []
        index = 0
        for ch in iter_chunks(self.header, _Pread(self._fd), self.file_size):
            if ch.chunk_type == CHUNK_CRC32:
                if not pending:  # nothing expanded yet: the CRC of nothing is 0
                    check_crc(ch, 0)
                    continue
                last = pending.pop()
                check = f"{last.check}," if last.check else ""
                pending.append(Chunk(last.index, last.extent, f"{check}{CRC_PREFIX}{ch.crc:08x}"))
                continue
            for extent in self._pieces(ch):
                merged = self._merge(pending[-1], extent) if pending else None
                if merged is not None:
                    pending[-1] = merged
                    continue
                yield from pending
                pending = [Chunk(index, extent)]
                index += 1
        if self.header.image_checksum and pending:
            last = pending.pop()
            check = f"{last.check}," if last.check else ""
            pending.append(Chunk(last.index, last.extent,
                                 f"{check}{CRC_PREFIX}{self.header.image_checksum:08x}"))
        yield from pending

    def _merge(self, last: Chunk, ext: Extent) -> Chunk | None:
        prev = last.extent
        same_window = prev.start_lba // self.chunk_sectors == ext.start_lba // self.chunk_sectors
        if last.check or prev.kind is not ext.kind or prev.fill != ext.fill or not same_window \
                or prev.end_lba != ext.start_lba:
            return None
        return Chunk(last.index, Extent(prev.start_lba, prev.count + ext.count, ext.kind, ext.fill))

    def _pieces(self, ch: SparseChunk) -> Iterator[Extent]:
        kind, fill = chunk_kind(ch)
        lba = ch.start_block * self.sectors_per_block
        end = min(self.sector_count, ch.end_block * self.sectors_per_block)
        while lba < end:
            stop = min(end, (lba // self.chunk_sectors + 1) * self.chunk_sectors)
            yield Extent(lba, stop - lba, kind, fill)
            lba = stop

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes; CRC32 records are checked when chunks are read in order.

        Raises:
            ChecksumMismatch: a CRC32 record disagrees with the expanded data before it.
        """
        ext = chunk.extent
        data = self.read(ext.start_lba, ext.count)
        if self.has_crc:
            self._track_crc(ext, data, chunk.check)
        return data

    def _track_crc(self, ext: Extent, data: bytes, check: str | None) -> None:
        state = (0, 0) if ext.start_lba == 0 else self._crc_state
        if state is not None and state[0] < ext.start_lba:
            state = (ext.start_lba, self._crc_gap(state[1], state[0], ext.start_lba))
        if state is None or state[0] != ext.start_lba:
            log.debug("%s: chunks read out of order, CRC32 records not checked", self.path)
            self._crc_state = None
            return
        crc = zlib.crc32(data, state[1])
        padded = self.header.total_blks * self.sectors_per_block
        if ext.end_lba == self.sector_count < padded:  # CRCs cover the padded last block
            crc = zlib.crc32(self._read(self.sector_count, padded - self.sector_count), crc)
        self._crc_state = (ext.end_lba, crc)
        for value in (check or "").split(","):
            if value.startswith(CRC_PREFIX) and int(value[len(CRC_PREFIX):], 16) != crc:
                raise ChecksumMismatch("sparse CRC32", expected=int(value[len(CRC_PREFIX):], 16),
                                       actual=crc, lba=ext.end_lba)

    def _crc_gap(self, crc: int, lba: int, end: int) -> int:
        """Fold sectors a caller skipped (e.g. DONT_CARE) into the running CRC."""
        step = self.chunk_sectors
        for start in range(lba, end, step):
            crc = zlib.crc32(self._read(start, min(step, end - start)), crc)
        return crc

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
