"""EWF chunks: encoding (with the empty-block optimisation) and checked decoding.

A compressed chunk is a complete zlib stream; its integrity check is zlib's own Adler-32
trailer (big-endian). An uncompressed chunk is the data followed by its Adler-32
(little-endian). Both checks cover the chunk's data, so one value describes either form.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from formats.errors import ChecksumMismatch, InvalidField
from formats.ewf import LEVEL_BEST, LEVEL_FAST, LEVEL_NONE, adler32

ZLIB_LEVEL = {LEVEL_NONE: 0, LEVEL_FAST: 1, LEVEL_BEST: 9}
EMPTY_BLOCK_ZLIB_LEVEL = 6         # measured: ewfacquire -c empty-block emits zlib level 6
PROBE_STRIDE, PROBE_BYTES = 4096, 512


def is_uniform(data: bytes | memoryview) -> bool:
    """True when every byte of ``data`` has the same value (an "empty block")."""
    data = bytes(data) if isinstance(data, memoryview) else data
    return not data or data.count(data[:1]) == len(data)


@lru_cache(maxsize=64)
def uniform_chunk(byte: int, size: int) -> bytes:
    """The stored form of a chunk of ``size`` bytes all equal to ``byte`` (compressed once,
    reused: the empty-block optimisation, compressed at any level as libewf does)."""
    return zlib.compress(bytes([byte]) * size, EMPTY_BLOCK_ZLIB_LEVEL)


def looks_incompressible(data: bytes | memoryview) -> bool:
    """True when the first 512 bytes of every 4 KiB page together do not compress at all.

    A cheap probe (1/8 of the chunk, at zlib level 1) that spares compressing encrypted or
    already-compressed chunks only to store them raw: they are the bulk of a phone's userdata.
    """
    if len(data) < 2 * PROBE_STRIDE:
        return False
    view = memoryview(data)
    sample = b"".join(view[off:off + PROBE_BYTES]
                      for off in range(0, len(data) - PROBE_BYTES + 1, PROBE_STRIDE))
    return len(zlib.compress(sample, 1)) >= len(sample)


def encode_chunk(data: bytes | memoryview, level: int) -> tuple[bytes, bool]:
    """Stored bytes of one chunk and whether they are compressed.

    Uniform chunks always use the cached compressed form. Otherwise the chunk is stored raw
    followed by its Adler-32 at ``LEVEL_NONE``, when zlib would not make it smaller (per the
    EWF document), and at ``LEVEL_FAST`` when looks_incompressible() says so.
    """
    if is_uniform(data):
        return uniform_chunk(data[0] if len(data) else 0, len(data)), True
    if level == LEVEL_BEST or (level == LEVEL_FAST and not looks_incompressible(data)):
        packed = zlib.compress(data, ZLIB_LEVEL[level])
        if len(packed) <= len(data):
            return packed, True
    return bytes(data) + adler32(data).to_bytes(4, "little"), False


def decode_chunk(stored: bytes, compressed: bool, size: int,
                 chunk: int | None = None) -> tuple[bytes, int]:
    """The ``size`` data bytes of a stored chunk and their stored Adler-32, verified.

    Bytes after the zlib stream or after a raw chunk's checksum (padding) are ignored.

    Raises:
        ChecksumMismatch: the Adler-32 (zlib trailer or raw suffix) does not match.
        InvalidField: the chunk does not decompress to exactly ``size`` bytes.
    """
    if not compressed:
        if len(stored) < size + 4:
            raise InvalidField("EWF chunk", "stored size", len(stored),
                               f"expected {size} bytes and a checksum (chunk {chunk})")
        data, expected = stored[:size], int.from_bytes(stored[size:size + 4], "little")
    else:
        data, expected = _inflate(stored, size, chunk)
    actual = adler32(data)
    if expected != actual:
        raise ChecksumMismatch("EWF chunk", expected=expected, actual=actual, chunk=chunk)
    return data, expected


def _inflate(stored: bytes, size: int, chunk: int | None) -> tuple[bytes, int]:
    """Raw-inflate the zlib body so the trailer is checked here, with both values reported."""
    if len(stored) < 6 or (stored[0] & 0x0F) != 8 or int.from_bytes(stored[:2], "big") % 31:
        raise InvalidField("EWF chunk", "zlib header", stored[:2].hex(), f"chunk {chunk}")
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(stored[2:], size + 1)  # bounded: never more than a chunk
    except zlib.error as err:
        raise InvalidField("EWF chunk", "deflate data", len(stored),
                           f"chunk {chunk}: {err}") from err
    if len(data) != size or not inflater.eof or len(inflater.unused_data) < 4:
        raise InvalidField("EWF chunk", "decompressed size", len(data),
                           f"expected {size} bytes and a trailer (chunk {chunk})")
    return data, int.from_bytes(inflater.unused_data[:4], "big")


