"""One Android sparse file being written, chunk by chunk (used by sparse_writer)."""

from __future__ import annotations

import os
import zlib

from formats.sparse import (
    CHUNK_CRC32,
    CHUNK_DONT_CARE,
    CHUNK_FILL,
    CHUNK_HDR_SZ,
    CHUNK_RAW,
    FILE_HDR_SZ,
    ChunkHeader,
    SparseHeader,
    build_chunk_header,
    build_sparse_header,
    crc32_repeat,
)
from imager.directio import DirectAppender
from imager.errors import UsageError

MAX_RAW_BYTES = 64 << 20       # longest RAW chunk written (bootloaders buffer per chunk)


class SparsePiece:
    """One sparse file being written; the header and open RAW chunk are patched on close.

    ``add_raw``/``add_fill`` take blocks in increasing order; gaps become DONT_CARE, and
    ``finish`` pads with DONT_CARE to ``total_blks`` (every piece spans the whole image).
    """

    def __init__(self, path: str, blk_sz: int, total_blks: int, crc: bool,
                 overwrite: bool) -> None:
        self.path, self.blk_sz, self.total_blks = path, blk_sz, total_blks
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            self.fd = os.open(path, flags, 0o644)
        except FileExistsError as err:
            raise UsageError(f"{path} already exists; refusing to overwrite it") from err
        self.out = DirectAppender(self.fd, 0)  # no page-cache copy of what is written
        self.out.append(bytes(FILE_HDR_SZ))
        self.block, self.chunks, self.data_chunks = 0, 0, 0
        self.crc: int | None = 0 if crc else None
        self.raw: tuple[int, int, int] | None = None   # (header offset, start block, blocks)
        self.fill: tuple[int, int, bytes] | None = None  # pending (start block, blocks, word)

    def size(self) -> int:
        """Bytes the piece holds so far (a pending FILL chunk included)."""
        return self.out.end + (CHUNK_HDR_SZ + 4 if self.fill else 0)

    def cost_fill(self, block: int, word: bytes) -> int:
        """Bytes that ``add_fill`` at ``block`` would add."""
        if self.fill and self.fill[2] == word and self.fill[0] + self.fill[1] == block:
            return 0
        return (CHUNK_HDR_SZ if block > self.end() else 0) + CHUNK_HDR_SZ + 4

    def cost_raw(self, block: int, nblocks: int) -> int:
        """Bytes that ``add_raw`` of ``nblocks`` at ``block`` would add."""
        extend = self.raw and self.block == block and \
            (self.raw[2] + nblocks) * self.blk_sz <= MAX_RAW_BYTES
        new = 0 if extend else CHUNK_HDR_SZ + (CHUNK_HDR_SZ if block > self.end() else 0)
        return new + nblocks * self.blk_sz

    def end(self) -> int:
        return self.fill[0] + self.fill[1] if self.fill else self.block

    def add_fill(self, block: int, nblocks: int, word: bytes) -> None:
        if self.fill and self.fill[2] == word and self.fill[0] + self.fill[1] == block:
            self.fill = (self.fill[0], self.fill[1] + nblocks, word)
            return
        self._close_raw()
        self._flush_fill()
        self._gap(block)
        self.fill = (block, nblocks, word)
        self.data_chunks += 1

    def add_raw(self, block: int, data: bytes | memoryview) -> None:
        nblocks = len(data) // self.blk_sz
        self._flush_fill()
        if not (self.raw and self.block == block
                and (self.raw[2] + nblocks) * self.blk_sz <= MAX_RAW_BYTES):
            self._close_raw()
            self._gap(block)
            self.raw = (self.out.end, block, 0)
            self.out.append(bytes(CHUNK_HDR_SZ))
            self.data_chunks += 1
        self.out.append(data)
        self.raw = (self.raw[0], self.raw[1], self.raw[2] + nblocks)
        self.block += nblocks
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)

    def _gap(self, block: int) -> None:
        if block > self.block:
            self._chunk(CHUNK_DONT_CARE, block - self.block, b"")
            if self.crc is not None:
                self.crc = crc32_repeat(self.crc, bytes(self.blk_sz), block - self.block)
            self.block = block

    def _chunk(self, chunk_type: int, nblocks: int, payload: bytes) -> None:
        head = ChunkHeader(chunk_type, nblocks, CHUNK_HDR_SZ + len(payload))
        self.out.append(build_chunk_header(head) + payload)
        self.chunks += 1

    def _flush_fill(self) -> None:
        if self.fill:
            block, nblocks, word = self.fill
            self.fill = None
            self._chunk(CHUNK_FILL, nblocks, word)
            if self.crc is not None:
                self.crc = crc32_repeat(self.crc, word * (self.blk_sz // 4), nblocks)
            self.block = block + nblocks

    def _close_raw(self) -> None:
        if self.raw:
            offset, _, nblocks = self.raw
            self.raw = None
            head = ChunkHeader(CHUNK_RAW, nblocks, CHUNK_HDR_SZ + nblocks * self.blk_sz)
            self.out.patch(offset, build_chunk_header(head))
            self.chunks += 1

    def finish(self) -> None:
        """Pad with DONT_CARE to ``total_blks``, append the CRC32 chunk, patch the header."""
        self._close_raw()
        self._flush_fill()
        self._gap(self.total_blks)
        if self.crc is not None:
            self._chunk(CHUNK_CRC32, 0, self.crc.to_bytes(4, "little"))
        self.out.patch(0, build_sparse_header(SparseHeader(self.blk_sz, self.total_blks,
                                                           self.chunks)))
        self.out.sync()
        self.abort()

    def sync(self) -> None:
        self.out.sync()

    def abort(self) -> None:
        """Close the file (what is still buffered is dropped: the caller deletes it)."""
        self.out.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
