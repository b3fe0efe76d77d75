"""Android sparse image (libsparse, ``.simg``): headers, chunk walking, CRC helpers.

Facts from specs/android-sparse.md (AOSP ``sparse_format.h`` / ``sparse_read.cpp``). Pure: the
streaming walker takes a ``read_at(offset, size) -> bytes`` callable and the file size, so the
caller owns the I/O and RAW payloads are never read while walking.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import construct as cs

from formats.errors import BadMagic, ChecksumMismatch, InvalidField, Truncated

SPARSE_MAGIC = 0xED26FF3A
FILE_HDR_SZ = 28
CHUNK_HDR_SZ = 12
CHUNK_RAW = 0xCAC1
CHUNK_FILL = 0xCAC2
CHUNK_DONT_CARE = 0xCAC3
CHUNK_CRC32 = 0xCAC4
CHUNK_NAMES = {CHUNK_RAW: "RAW", CHUNK_FILL: "FILL", CHUNK_DONT_CARE: "DONT_CARE",
               CHUNK_CRC32: "CRC32"}
U32_MAX = 0xFFFFFFFF

SPARSE_HEADER = cs.Struct(
    "magic" / cs.Const(SPARSE_MAGIC, cs.Int32ul),
    "major_version" / cs.Int16ul,
    "minor_version" / cs.Int16ul,
    "file_hdr_sz" / cs.Int16ul,
    "chunk_hdr_sz" / cs.Int16ul,
    "blk_sz" / cs.Int32ul,
    "total_blks" / cs.Int32ul,
    "total_chunks" / cs.Int32ul,
    "image_checksum" / cs.Int32ul,
)
CHUNK_HEADER = cs.Struct(
    "chunk_type" / cs.Int16ul,
    "reserved1" / cs.Int16ul,
    "chunk_sz" / cs.Int32ul,
    "total_sz" / cs.Int32ul,
)


@dataclass(frozen=True)
class SparseHeader:
    """The file header. ``file_hdr_sz``/``chunk_hdr_sz`` may exceed 28/12 (extra bytes skipped)."""

    blk_sz: int
    total_blks: int
    total_chunks: int
    image_checksum: int = 0
    major_version: int = 1
    minor_version: int = 0
    file_hdr_sz: int = FILE_HDR_SZ
    chunk_hdr_sz: int = CHUNK_HDR_SZ

    @property
    def expanded_size(self) -> int:
        """Bytes of the raw image this file expands to."""
        return self.blk_sz * self.total_blks


@dataclass(frozen=True)
class ChunkHeader:
    """One chunk record's header; ``total_sz`` includes the header itself."""

    chunk_type: int
    chunk_sz: int
    total_sz: int
    reserved1: int = 0


@dataclass(frozen=True)
class SparseChunk:
    """A validated chunk record and where it sits in the file and in the expanded image.

    ``value`` is the fill word (as stored, little-endian 4 bytes) for FILL, the stored CRC32
    (4 bytes) for CRC32 and ``None`` otherwise. ``data_offset`` is where the payload starts.
    """

    index: int
    chunk_type: int
    start_block: int
    block_count: int
    header_offset: int
    data_offset: int
    data_size: int
    value: bytes | None = None

    @property
    def end_block(self) -> int:
        return self.start_block + self.block_count

    @property
    def next_offset(self) -> int:
        return self.data_offset + self.data_size

    @property
    def crc(self) -> int:
        """The stored CRC of a CRC32 chunk."""
        return int.from_bytes(self.value or b"", "little")


@dataclass(frozen=True)
class WalkState:
    """Where a walk resumes: the ``index``-th chunk header at file ``offset``, block ``block``."""

    index: int
    offset: int
    block: int


def parse_sparse_header(data: bytes) -> SparseHeader:
    """Parse and validate the 28-byte file header (extra header bytes are not needed).

    Raises:
        Truncated, BadMagic, InvalidField.
    """
    if len(data) < FILE_HDR_SZ:
        raise Truncated("sparse header", FILE_HDR_SZ, len(data))
    magic = int.from_bytes(data[:4], "little")
    if magic != SPARSE_MAGIC:
        raise BadMagic("sparse header", f"{SPARSE_MAGIC:#010x}", f"{magic:#010x}")
    c = SPARSE_HEADER.parse(bytes(data[:FILE_HDR_SZ]))
    header = SparseHeader(c.blk_sz, c.total_blks, c.total_chunks, c.image_checksum,
                          c.major_version, c.minor_version, c.file_hdr_sz, c.chunk_hdr_sz)
    _validate_header(header)
    return header


def _validate_header(h: SparseHeader) -> None:
    what = "sparse header"
    if h.major_version != 1:
        raise InvalidField(what, "major_version", h.major_version, "only major version 1 exists")
    if h.file_hdr_sz < FILE_HDR_SZ:
        raise InvalidField(what, "file_hdr_sz", h.file_hdr_sz, f"less than {FILE_HDR_SZ}")
    if h.chunk_hdr_sz < CHUNK_HDR_SZ:
        raise InvalidField(what, "chunk_hdr_sz", h.chunk_hdr_sz, f"less than {CHUNK_HDR_SZ}")
    if h.blk_sz == 0 or h.blk_sz % 4:
        raise InvalidField(what, "blk_sz", h.blk_sz, "must be a non-zero multiple of 4")
    if h.total_blks == 0:
        raise InvalidField(what, "total_blks", 0, "an image has at least one block")


def build_sparse_header(header: SparseHeader) -> bytes:
    """The header bytes: 28 bytes plus zero padding up to ``file_hdr_sz``."""
    raw = SPARSE_HEADER.build({
        "major_version": header.major_version, "minor_version": header.minor_version,
        "file_hdr_sz": header.file_hdr_sz, "chunk_hdr_sz": header.chunk_hdr_sz,
        "blk_sz": header.blk_sz, "total_blks": header.total_blks,
        "total_chunks": header.total_chunks, "image_checksum": header.image_checksum})
    return raw + bytes(max(0, header.file_hdr_sz - FILE_HDR_SZ))


def parse_chunk_header(data: bytes) -> ChunkHeader:
    """Parse the 12 leading bytes of a chunk header (no semantic checks: see ``iter_chunks``)."""
    if len(data) < CHUNK_HDR_SZ:
        raise Truncated("sparse chunk header", CHUNK_HDR_SZ, len(data))
    c = CHUNK_HEADER.parse(bytes(data[:CHUNK_HDR_SZ]))
    return ChunkHeader(c.chunk_type, c.chunk_sz, c.total_sz, c.reserved1)


def build_chunk_header(chunk: ChunkHeader, chunk_hdr_sz: int = CHUNK_HDR_SZ) -> bytes:
    """The chunk header bytes, zero padded up to ``chunk_hdr_sz``."""
    raw = CHUNK_HEADER.build({"chunk_type": chunk.chunk_type, "reserved1": chunk.reserved1,
                                  "chunk_sz": chunk.chunk_sz, "total_sz": chunk.total_sz})
    return raw + bytes(max(0, chunk_hdr_sz - CHUNK_HDR_SZ))


_CHUNK_STRUCT = struct.Struct("<HHII")   # the CHUNK_HEADER layout, for the hot walk loop
_FIXED_PAYLOAD = {CHUNK_FILL: 4, CHUNK_CRC32: 4, CHUNK_DONT_CARE: 0}


def expected_payload(chunk_type: int, chunk_sz: int, blk_sz: int) -> int:
    """Payload bytes a chunk of this type and length must carry (spec table)."""
    if chunk_type == CHUNK_RAW:
        return chunk_sz * blk_sz
    if chunk_type in (CHUNK_FILL, CHUNK_CRC32):
        return 4
    if chunk_type == CHUNK_DONT_CARE:
        return 0
    raise InvalidField("sparse chunk", "chunk_type", f"{chunk_type:#06x}", "unknown chunk type")


def _check_chunk(h: SparseHeader, ch: ChunkHeader, state: WalkState, file_size: int) -> None:
    what = f"sparse chunk {state.index} at offset {state.offset}"
    try:
        payload = expected_payload(ch.chunk_type, ch.chunk_sz, h.blk_sz)
    except InvalidField as err:
        raise InvalidField(what, "chunk_type", err.value, err.reason) from None
    if ch.chunk_type == CHUNK_CRC32 and ch.chunk_sz != 0:
        raise InvalidField(what, "chunk_sz", ch.chunk_sz, "a CRC32 chunk covers 0 blocks")
    if ch.total_sz != h.chunk_hdr_sz + payload:
        name = CHUNK_NAMES[ch.chunk_type]
        raise InvalidField(what, "total_sz", ch.total_sz,
                           f"a {name} chunk of {ch.chunk_sz} blocks is "
                           f"{h.chunk_hdr_sz + payload} bytes")
    if state.block + ch.chunk_sz > h.total_blks:
        raise InvalidField(what, "chunk_sz", ch.chunk_sz,
                           f"blocks {state.block}..{state.block + ch.chunk_sz} overrun "
                           f"total_blks {h.total_blks}")
    if state.offset + ch.total_sz > file_size:
        raise Truncated(what, state.offset + ch.total_sz, file_size)


def iter_chunks(header: SparseHeader, read_at: Callable[[int, int], bytes], file_size: int,
                start: WalkState | None = None) -> Iterator[SparseChunk]:
    """Validate and yield chunk records from ``start`` (default: the first) to the last.

    Only chunk headers and 4-byte FILL/CRC payloads are read. After the last record the block
    position must equal ``total_blks``.

    Raises:
        Truncated: the file ends inside a record, or before ``total_chunks`` records.
        InvalidField: a record contradicts its type, overruns ``total_blks``, or the records
            cover fewer blocks than ``total_blks``.
    """
    state = start or WalkState(0, header.file_hdr_sz, 0)
    need = header.file_hdr_sz + (header.total_chunks - state.index) * header.chunk_hdr_sz
    if start is None and need > file_size:
        raise Truncated(f"sparse file of {header.total_chunks} chunks", need, file_size)
    index, offset, block = state.index, state.offset, state.block
    hdr_sz, blk_sz, total_blks = header.chunk_hdr_sz, header.blk_sz, header.total_blks
    while index < header.total_chunks:
        head = read_at(offset, hdr_sz + 4)
        if len(head) < hdr_sz:
            raise Truncated(f"sparse chunk {index} at offset {offset}", hdr_sz, len(head))
        ctype, _, csz, total = _CHUNK_STRUCT.unpack_from(head)
        # the common case inline (millions of chunks); anything unusual gets the full check
        payload = _FIXED_PAYLOAD.get(ctype, -1) if ctype != CHUNK_RAW else csz * blk_sz
        if total != hdr_sz + payload or block + csz > total_blks or offset + total > file_size \
                or (ctype == CHUNK_CRC32 and csz):
            _check_chunk(header, ChunkHeader(ctype, csz, total), WalkState(index, offset, block),
                         file_size)
        value = bytes(head[hdr_sz:hdr_sz + 4]) if payload == 4 and ctype != CHUNK_RAW else None
        yield SparseChunk(index, ctype, block, csz, offset, offset + hdr_sz, total - hdr_sz, value)
        index, offset, block = index + 1, offset + total, block + csz
    if block != total_blks:
        raise InvalidField("sparse header", "total_blks", total_blks,
                           f"the {header.total_chunks} chunks cover {block} blocks")


def parse_sparse(data: bytes) -> tuple[SparseHeader, list[SparseChunk]]:
    """Header and validated chunk list of a whole sparse file held in memory."""
    header = parse_sparse_header(data)
    chunks = list(iter_chunks(header, lambda off, n: data[off:off + n], len(data)))
    return header, chunks


def expand_chunk(chunk: SparseChunk, blk_sz: int, payload: bytes) -> bytes:
    """The expanded bytes of a RAW/FILL/DONT_CARE chunk (``payload``: its RAW data)."""
    if chunk.chunk_type == CHUNK_RAW:
        return payload
    if chunk.chunk_type == CHUNK_FILL:
        return (chunk.value or b"") * (blk_sz // 4 * chunk.block_count)
    return bytes(blk_sz * chunk.block_count)


def check_crc(chunk: SparseChunk, running: int) -> None:
    """Raise ChecksumMismatch when a CRC32 chunk disagrees with the running CRC."""
    if chunk.crc != running:
        raise ChecksumMismatch("sparse CRC32 chunk", expected=chunk.crc, actual=running,
                               chunk=chunk.index)


# CRC32 of long runs without touching every byte (zlib's crc32_combine, GF(2) operators).
_ZERO_OPS: list[list[int]] = []  # _ZERO_OPS[k]: operator appending 2**k zero bytes


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _zero_ops(k: int) -> list[int]:
    if not _ZERO_OPS:
        op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
        for _ in range(3):  # -> one zero byte
            op = [_gf2_times(op, op[n]) for n in range(32)]
        _ZERO_OPS.append(op)
    while len(_ZERO_OPS) <= k:
        last = _ZERO_OPS[-1]
        _ZERO_OPS.append([_gf2_times(last, last[n]) for n in range(32)])
    return _ZERO_OPS[k]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32 of A+B from crc32(A), crc32(B) and len(B)."""
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_zero_ops(k), crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


def crc32_repeat(crc: int, unit: bytes, count: int) -> int:
    """zlib.crc32(unit * count, crc) in O(log count) time."""
    piece_crc, piece_len = zlib.crc32(unit), len(unit)
    while count:
        if count & 1:
            crc = crc32_combine(crc, piece_crc, piece_len)
        count >>= 1
        if count:
            piece_crc = crc32_combine(piece_crc, piece_crc, piece_len)
            piece_len *= 2
    return crc
