"""Writing Android sparse images: one file, or several ``max_size`` pieces like fastboot.

``SimgEncoder`` takes extents in LBA order (the Sink shape) and turns them into chunks:
ZERO/FILL -> FILL, DATA -> RAW (adjacent runs merged; blocks whose 32-bit words are all equal
become FILL, as img2simg does), UNREAD/NOT_ACQUIRED -> DONT_CARE. With ``max_size`` it splits the
way libsparse's ``sparse_file_resparse`` does: every piece has the full ``total_blks`` with
DONT_CARE for what other pieces carry, a chunk that overflows is split when more than 1/8 of the
budget is left, and each piece is independently flashable (specs/android-sparse.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from formats.extent import Extent, Kind
from formats.sparse import CHUNK_HDR_SZ, FILE_HDR_SZ, U32_MAX
from imager.errors import UsageError
from imager.image.sidecar import save_sidecar
from imager.image.sparse_piece import MAX_RAW_BYTES, SparsePiece

log = logging.getLogger(__name__)

CRC_CHUNK_SZ = CHUNK_HDR_SZ + 4




def piece_path(out_path: str, index: int) -> str:
    """Name of piece ``index``: ``system.simg`` -> ``system.0.simg`` (no suffix: ``out.0``)."""
    p = Path(out_path)
    return str(p.with_name(f"{p.stem}.{index}{p.suffix}")) if p.suffix else f"{out_path}.{index}"


READ_KINDS = (Kind.DATA, Kind.ZERO, Kind.FILL)


def _uniform_blocks(mv: memoryview, bs: int, n: int) -> dict[int, bytes]:
    """Index -> fill word of the blocks whose 32-bit words are all equal (as img2simg tests).

    Comparing each block's first and last word first keeps the per-block cost tiny for data;
    candidates are compared as bytes (a memoryview comparison is ~30x slower).
    """
    words, wpb = mv.cast("I"), bs // 4
    out: dict[int, bytes] = {}
    patterns: dict[int, bytes] = {}
    for i in [i for i in range(n) if words[i * wpb] == words[i * wpb + wpb - 1]]:
        pattern = patterns.get(words[i * wpb])
        if pattern is None:
            pattern = patterns[words[i * wpb]] = mv[i * bs:i * bs + 4].tobytes() * wpb
        if mv[i * bs:(i + 1) * bs].tobytes() == pattern:
            out[i] = pattern[:4]
    return out


class SimgEncoder:
    """Turns extents (in LBA order) into one sparse file or ``max_size`` pieces.

    LBAs are absolute; ``origin_lba`` is the first sector written (a partition's start).
    """

    def __init__(self, out_path: str, *, sector_size: int, sector_count: int,
                 origin_lba: int = 0, block_size: int = 4096, crc: bool = False,
                 max_size: int | None = None, overwrite: bool = False) -> None:
        if block_size <= 0 or block_size % 4 or block_size % sector_size:
            raise UsageError(f"sparse block size {block_size} must be a positive multiple of 4 "
                             f"and of the {sector_size}-byte sector size")
        self.out_path, self.sector_size, self.blk = out_path, sector_size, block_size
        self.spb, self.origin, self.crc, self.max_size = \
            block_size // sector_size, origin_lba, crc, max_size
        self.sector_count, self.overwrite = sector_count, overwrite
        self.total_blks = -(-sector_count // self.spb)
        if not 0 < self.total_blks <= U32_MAX:
            raise UsageError(f"{sector_count} sectors do not fit a sparse image of "
                             f"{block_size}-byte blocks (1..{U32_MAX} blocks)")
        self._reserve = CHUNK_HDR_SZ + (CRC_CHUNK_SZ if crc else 0)
        minimum = FILE_HDR_SZ + 2 * CHUNK_HDR_SZ + block_size + self._reserve
        if max_size is not None and max_size < minimum:
            raise UsageError(f"--max-size {max_size} is too small: a piece of {block_size}-byte "
                             f"blocks needs at least {minimum} bytes")
        self.pieces: list[SparsePiece] = []
        self.next_lba = 0
        self.partial: list[tuple[Kind, int | None, int, bytes | None]] = []
        self.mixed_blocks = 0

    def _current(self) -> SparsePiece:
        if not self.pieces:
            self._new_piece()
        return self.pieces[-1]

    def _new_piece(self) -> None:
        if self.pieces:
            self.pieces[-1].finish()
        path = self.out_path if self.max_size is None else piece_path(self.out_path,
                                                                      len(self.pieces))
        self.pieces.append(SparsePiece(path, self.blk, self.total_blks, self.crc, self.overwrite))

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Add one extent; ``data`` is needed for DATA only. Gaps become DONT_CARE."""
        rel = extent.start_lba - self.origin
        if rel < self.next_lba or rel + extent.count > self.sector_count:
            raise ValueError(f"extent {extent.start_lba}+{extent.count} is out of order or "
                             f"outside {self.origin}+{self.sector_count} (next {self.next_lba})")
        if extent.kind is Kind.DATA and (data is None or
                                         len(data) != extent.count * self.sector_size):
            raise ValueError(f"DATA extent at LBA {extent.start_lba} needs "
                             f"{extent.count * self.sector_size} bytes")
        if rel > self.next_lba:
            self._feed(self.next_lba, rel - self.next_lba, Kind.NOT_ACQUIRED, None, None)
        mv = memoryview(data).cast("B") if data is not None else None
        self._feed(rel, extent.count, extent.kind, extent.fill, mv)

    def _feed(self, lba: int, n: int, kind: Kind, fill: int | None,
              mv: memoryview | None) -> None:
        ss, spb, pos = self.sector_size, self.spb, 0
        head = (-lba) % spb
        if head:
            pos = min(n, head)
            self.partial.append((kind, fill, pos, bytes(mv[:pos * ss]) if mv else None))
            if (lba + pos) % spb == 0:
                self._flush_partial((lba + pos) // spb - 1)
        whole = (n - pos) // spb
        if whole:
            part = mv[pos * ss:(pos + whole * spb) * ss] if mv else None
            self._whole((lba + pos) // spb, whole, kind, fill, part)
            pos += whole * spb
        if pos < n:
            self.partial.append((kind, fill, n - pos, bytes(mv[pos * ss:]) if mv else None))
        self.next_lba = lba + n

    def _flush_partial(self, block: int) -> None:
        parts, self.partial = self.partial, []
        kinds = {p[0] for p in parts}
        if not kinds & set(READ_KINDS):
            return  # nothing read in this block: leave the target as it is
        if kinds - set(READ_KINDS):
            self.mixed_blocks += 1  # unread sectors inside a block with data are written as zeros
        buf = b"".join(data if data is not None else
                       bytes([fill or 0]) * (count * self.sector_size)
                       for _, fill, count, data in parts)
        self._whole(block, 1, Kind.DATA, None, memoryview(buf))

    def _whole(self, block: int, n: int, kind: Kind, fill: int | None,
               mv: memoryview | None) -> None:
        if kind is Kind.ZERO:
            self._emit_fill(block, n, bytes(4))
        elif kind is Kind.FILL:
            self._emit_fill(block, n, bytes([fill or 0]) * 4)
        elif kind is Kind.DATA and mv is not None:
            self._classify(block, n, mv)

    def _classify(self, block: int, n: int, mv: memoryview) -> None:
        """Uniform blocks (all 32-bit words equal) -> FILL, the rest -> RAW runs."""
        uniform = _uniform_blocks(mv, self.blk, n)
        keys, k, pos = sorted(uniform), 0, 0
        while pos < n:
            if k < len(keys) and keys[k] == pos:
                word, end, k = uniform[pos], pos + 1, k + 1
                while k < len(keys) and keys[k] == end and uniform[end] == word:
                    end, k = end + 1, k + 1
            else:   # a stretch of data blocks up to the next uniform one
                word, end = None, keys[k] if k < len(keys) else n
            self._emit_run(block + pos, end - pos, word, mv, pos)
            pos = end

    def _emit_run(self, block: int, n: int, word: bytes | None, mv: memoryview,
                  first: int) -> None:
        if word is None:
            self._emit_raw(block, mv[first * self.blk:(first + n) * self.blk])
        else:
            self._emit_fill(block, n, word)

    def _room(self, piece: SparsePiece) -> int:
        return (self.max_size or 0) - self._reserve - piece.size()

    def _emit_raw(self, block: int, data: memoryview) -> None:
        budget = (self.max_size or 0) - self._reserve - FILE_HDR_SZ
        while len(data):
            piece = self._current()
            step = data[:MAX_RAW_BYTES]
            nblocks = len(step) // self.blk
            cost = piece.cost_raw(block, nblocks)
            if self.max_size is not None and cost > self._room(piece):
                room = self._room(piece)
                fit = max(0, (room - (cost - nblocks * self.blk)) // self.blk)
                if fit and (piece.data_chunks == 0 or room > budget // 8):
                    piece.add_raw(block, step[:fit * self.blk])
                    block, data = block + fit, data[fit * self.blk:]
                self._new_piece()
                continue
            piece.add_raw(block, step)
            block, data = block + nblocks, data[len(step):]

    def _emit_fill(self, block: int, n: int, word: bytes) -> None:
        piece = self._current()
        if self.max_size is not None and piece.cost_fill(block, word) > self._room(piece):
            self._new_piece()
            piece = self._current()
        piece.add_fill(block, n, word)

    def close(self) -> list[str]:
        """Finish every piece; return their paths (one path without ``max_size`` splitting)."""
        if self.partial:  # the image ends inside a block: pad it like img2simg (zeros)
            pad = self.spb - sum(p[2] for p in self.partial)
            if {p[0] for p in self.partial} & set(READ_KINDS):
                self.partial.append((Kind.ZERO, None, pad, None))
                self._flush_partial(self.next_lba // self.spb)
            self.partial = []
        self._current().finish()
        if self.mixed_blocks:
            log.warning("%d sparse block(s) mix read and unread sectors: the unread sectors "
                        "are written as zeros", self.mixed_blocks)
        if self.max_size is not None and len(self.pieces) == 1:
            if not self.overwrite and os.path.exists(self.out_path):
                raise UsageError(f"{self.out_path} already exists; refusing to overwrite it")
            os.replace(self.pieces[0].path, self.out_path)
            self.pieces[0].path = self.out_path
        return [p.path for p in self.pieces]

    def abort(self) -> None:
        """Close and delete everything written (an incomplete piece is not a valid image)."""
        for piece in self.pieces:
            piece.abort()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(piece.path)


class SparseSink:
    """The acquire pipeline's output as an Android sparse image (Sink protocol).

    Not resumable: a sparse file's header and RAW chunk headers are patched when it is closed,
    so an interrupted acquisition leaves no valid image and must be restarted.
    """

    image_format = "simg"

    def __init__(self, path: str, sector_size: int, sector_count: int, *,
                 block_size: int = 4096, crc: bool = False, max_size: int | None = None,
                 overwrite: bool = False, chunk_sectors: int | None = None) -> None:
        del chunk_sectors  # the pipeline's chunking does not matter to a sparse file
        self.path = path
        self.encoder = SimgEncoder(path, sector_size=sector_size, sector_count=sector_count,
                                   block_size=block_size, crc=crc, max_size=max_size,
                                   overwrite=overwrite)
        self.paths: list[str] = []

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store one extent (LBA order); gaps are DONT_CARE."""
        self.encoder.write(extent, data if extent.kind is Kind.DATA else None)

    def checkpoint(self) -> dict[str, Any]:
        """fsync what is written; the state says it cannot be resumed."""
        if self.encoder.pieces:
            self.encoder.pieces[-1].sync()
        return {"format": "simg", "next_lba": self.encoder.next_lba, "resumable": False}

    def finalize(self, manifest: Any = None) -> None:
        """Close the sparse file(s); the manifest (if any) goes beside it as OUT.json."""
        self.paths = self.encoder.close()
        if hasattr(manifest, "to_json"):
            save_sidecar(self.path, manifest)

    @classmethod
    def reopen(cls, path: str, offset: int, **kw: Any) -> SparseSink:
        """Sparse images cannot resume (headers are patched at the end).

        Raises:
            UsageError: always, saying what to delete.
        """
        raise UsageError(f"{path}: an interrupted sparse (simg) acquisition cannot be resumed; "
                         f"delete {path} and its journal and acquire again")

    def abort(self) -> None:
        """Delete the incomplete output."""
        self.encoder.abort()


def export_simg(reader: Any, out_path: str, *, partition: str | None = None,
                max_size: int | None = None, crc: bool = False, block_size: int = 4096,
                progress: Callable[[int, int], None] | None = None) -> list[str]:
    """``imager export --to simg`` (the EXPORTERS entry): see sparse_export.write_simg."""
    from imager.image.sparse_export import write_simg

    return write_simg(reader, out_path, partition=partition, max_size=max_size, crc=bool(crc),
                      block_size=block_size, progress=progress)
