"""Zstandard frames as bytes: skippable frames, the seekable-format seek table, tiny RLE frames.

References: RFC 8878 (frame header, blocks, skippable frames) and the zstd contrib *seekable
format* v0.1.0 (seek table as the last skippable frame); see specs/zstd-seekable.md. Nothing
here compresses: a ZERO/FILL chunk becomes a frame of RLE blocks that any stock ``zstd -d``
expands to the repeated byte, built in microseconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from formats.errors import BadMagic, InvalidField, Truncated

ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MAGIC = 0x184D2A50          # low nibble free: 0x184D2A50..0x184D2A5F
SKIPPABLE_MASK = 0xFFFFFFF0
SEEK_TABLE_NIBBLE = 0xE               # the reference writer's choice (0x184D2A5E)
SEEKABLE_MAGIC = 0x8F92EAB1
SEEK_FOOTER_SIZE = 9
MAX_SEEK_FRAMES = 0x8000000           # ZSTD_SEEKABLE_MAXFRAMES
MAX_BLOCK = 128 * 1024                # Block_Maximum_Size (ZSTD_BLOCKSIZELOG_MAX 17)
RLE_WINDOW_DESCRIPTOR = (17 - 10) << 3  # windowLog 17 = 128 KiB: small decoder memory


@dataclass(frozen=True)
class SkippableFrame:
    """A skippable frame: ``nibble`` is the low 4 bits of its magic."""

    nibble: int
    data: bytes

    @property
    def size(self) -> int:
        return 8 + len(self.data)


@dataclass(frozen=True)
class SeekEntry:
    """One seek-table entry: a frame's full size in the file, its content size, checksum."""

    compressed_size: int
    decompressed_size: int
    checksum: int | None = None


@dataclass(frozen=True)
class SeekTable:
    """The seekable-format index: one entry per frame, in file order."""

    entries: tuple[SeekEntry, ...]
    has_checksums: bool

    @property
    def size(self) -> int:
        """Bytes of the whole seek-table frame (skippable header + entries + footer)."""
        return 8 + len(self.entries) * (12 if self.has_checksums else 8) + SEEK_FOOTER_SIZE


@dataclass(frozen=True)
class FrameHeader:
    """The parsed header of an ordinary zstd frame (RFC 8878 section 3.1.1.1)."""

    header_size: int              # magic included
    content_size: int | None      # None: not stored
    window_size: int
    has_checksum: bool
    dict_id: int


def build_skippable(data: bytes, nibble: int = 0) -> bytes:
    """A skippable frame holding ``data`` (decoders skip it)."""
    if not 0 <= nibble <= 15:
        raise InvalidField("skippable frame", "nibble", nibble, "must be 0..15")
    if len(data) > 0xFFFFFFFF:
        raise InvalidField("skippable frame", "size", len(data), "exceeds 2^32-1")
    return struct.pack("<II", SKIPPABLE_MAGIC | nibble, len(data)) + data


def parse_skippable_header(buf: bytes) -> tuple[int, int]:
    """(nibble, user-data size) of the skippable frame header at the start of ``buf``."""
    if len(buf) < 8:
        raise Truncated("skippable frame header", 8, len(buf))
    magic, size = struct.unpack_from("<II", buf)
    if magic & SKIPPABLE_MASK != SKIPPABLE_MAGIC:
        raise BadMagic("skippable frame", f"{SKIPPABLE_MAGIC:#x}..{SKIPPABLE_MAGIC | 15:#x}",
                       f"{magic:#x}")
    return magic & 0xF, size


def parse_skippable(buf: bytes) -> SkippableFrame:
    """The skippable frame at the start of ``buf`` (trailing bytes are ignored)."""
    nibble, size = parse_skippable_header(buf)
    if len(buf) < 8 + size:
        raise Truncated("skippable frame", 8 + size, len(buf))
    return SkippableFrame(nibble, bytes(buf[8:8 + size]))


def build_seek_table(entries: list[SeekEntry] | tuple[SeekEntry, ...],
                     with_checksums: bool = True) -> bytes:
    """The seek-table skippable frame (must be the last frame of the file)."""
    if len(entries) >= MAX_SEEK_FRAMES:
        raise InvalidField("seek table", "frames", len(entries), f"limit {MAX_SEEK_FRAMES}")
    parts = []
    for i, e in enumerate(entries):
        if not (0 <= e.compressed_size <= 0xFFFFFFFF and 0 <= e.decompressed_size <= 0xFFFFFFFF):
            raise InvalidField("seek table", f"entry {i}", e, "sizes must fit in 32 bits")
        if with_checksums:
            if e.checksum is None:
                raise InvalidField("seek table", f"entry {i}", e, "checksum missing")
            parts.append(struct.pack("<III", e.compressed_size, e.decompressed_size, e.checksum))
        else:
            parts.append(struct.pack("<II", e.compressed_size, e.decompressed_size))
    footer = struct.pack("<IBI", len(entries), 0x80 if with_checksums else 0, SEEKABLE_MAGIC)
    return build_skippable(b"".join(parts) + footer, SEEK_TABLE_NIBBLE)


def seek_table_size(footer: bytes) -> int:
    """Size of the whole seek-table frame, from the file's last 9 bytes.

    Raises:
        Truncated, BadMagic, InvalidField: the bytes are not a seekable-format footer.
    """
    if len(footer) < SEEK_FOOTER_SIZE:
        raise Truncated("seek table footer", SEEK_FOOTER_SIZE, len(footer))
    count, desc, magic = struct.unpack("<IBI", footer[-SEEK_FOOTER_SIZE:])
    if magic != SEEKABLE_MAGIC:
        raise BadMagic("seek table footer", f"{SEEKABLE_MAGIC:#x}", f"{magic:#x}")
    if desc & 0x7C:
        raise InvalidField("seek table footer", "descriptor", desc, "reserved bits set")
    if count >= MAX_SEEK_FRAMES:
        raise InvalidField("seek table footer", "frames", count, f"limit {MAX_SEEK_FRAMES}")
    return 8 + count * (12 if desc & 0x80 else 8) + SEEK_FOOTER_SIZE


def parse_seek_table(buf: bytes) -> SeekTable:
    """The seek table that ends ``buf`` (give at least ``seek_table_size`` trailing bytes)."""
    size = seek_table_size(buf)
    if len(buf) < size:
        raise Truncated("seek table", size, len(buf))
    frame = buf[len(buf) - size:]
    _nibble, data_size = parse_skippable_header(frame)
    if data_size != size - 8:
        raise InvalidField("seek table", "frame size", data_size, f"footer implies {size - 8}")
    count, desc, _ = struct.unpack_from("<IBI", frame, size - SEEK_FOOTER_SIZE)
    flagged = bool(desc & 0x80)
    step = 12 if flagged else 8
    entries = []
    for i in range(count):
        fields = struct.unpack_from("<III" if flagged else "<II", frame, 8 + i * step)
        entries.append(SeekEntry(fields[0], fields[1], fields[2] if flagged else None))
    return SeekTable(tuple(entries), flagged)


def build_fill_frame(size: int, fill: int = 0, checksum: int | None = None) -> bytes:
    """A zstd frame whose content is ``size`` copies of byte ``fill``, made of RLE blocks.

    Costs 4 bytes per 128 KiB block plus a header of at most 18 bytes (32 bytes/MiB): no
    compressor runs. ``checksum`` (low 32 bits of XXH64 of the content) is appended when given,
    so ``zstd -d``/``zstd -t`` check these frames as they check compressed ones.
    """
    if size < 0 or not 0 <= fill <= 255:
        raise InvalidField("fill frame", "size/fill", (size, fill), "out of range")
    fcs_flag, fcs = (2, struct.pack("<I", size)) if size < 1 << 32 else (3, struct.pack("<Q", size))
    fhd = (fcs_flag << 6) | (4 if checksum is not None else 0)
    parts = [struct.pack("<IBB", ZSTD_MAGIC, fhd, RLE_WINDOW_DESCRIPTOR), fcs]
    full, rest = divmod(size, MAX_BLOCK)
    sizes = [MAX_BLOCK] * full + ([rest] if rest or not full else [])
    body = struct.pack("<I", (MAX_BLOCK << 3) | (1 << 1))[:3] + bytes([fill])
    parts.append(body * (len(sizes) - 1))
    last = (sizes[-1] << 3) | (1 << 1) | 1
    parts.append(struct.pack("<I", last)[:3] + bytes([fill]))
    if checksum is not None:
        parts.append(struct.pack("<I", checksum & 0xFFFFFFFF))
    return b"".join(parts)


def parse_frame_header(buf: bytes) -> FrameHeader:
    """The header of the ordinary zstd frame at the start of ``buf``."""
    if len(buf) < 6:
        raise Truncated("zstd frame header", 6, len(buf))
    magic, fhd = struct.unpack_from("<IB", buf)
    if magic != ZSTD_MAGIC:
        raise BadMagic("zstd frame", f"{ZSTD_MAGIC:#x}", f"{magic:#x}")
    if fhd & 0x08:
        raise InvalidField("zstd frame header", "reserved bit", fhd, "must be 0")
    single = bool(fhd & 0x20)
    did_size = (0, 1, 2, 4)[fhd & 3]
    fcs_size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    size = 5 + (0 if single else 1) + did_size + fcs_size
    if len(buf) < size:
        raise Truncated("zstd frame header", size, len(buf))
    pos = 5
    window = 0
    if not single:
        wd = buf[pos]
        log = 10 + (wd >> 3)
        window = (1 << log) + ((1 << log) >> 3) * (wd & 7)
        pos += 1
    dict_id = int.from_bytes(buf[pos:pos + did_size], "little")
    pos += did_size
    content: int | None = int.from_bytes(buf[pos:pos + fcs_size], "little") if fcs_size else None
    if fcs_size == 2 and content is not None:
        content += 256
    if single:
        window = content or 0
    return FrameHeader(size, content, window, bool(fhd & 4), dict_id)


def frame_length(buf: bytes, offset: int = 0) -> int | None:
    """Full length of the frame starting at ``buf[offset:]``, or None when it runs past the end.

    Walks the block headers (skippable frames by their size field) without decompressing:
    the scan that recovers the frames of an image whose seek table is missing.

    Raises:
        BadMagic, InvalidField: not a frame, or a reserved block type.
    """
    head = bytes(buf[offset:offset + 18])
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] & SKIPPABLE_MASK == SKIPPABLE_MAGIC:
        if len(head) < 8:
            return None
        total = 8 + struct.unpack_from("<I", head, 4)[0]
        return total if offset + total <= len(buf) else None
    try:
        header = parse_frame_header(head)
    except Truncated:
        return None
    pos = offset + header.header_size
    while True:
        if pos + 3 > len(buf):
            return None
        word = int.from_bytes(buf[pos:pos + 3], "little")
        btype, bsize = (word >> 1) & 3, word >> 3
        if btype == 3:
            raise InvalidField("zstd block", "type", 3, f"reserved (at byte {pos})")
        pos += 3 + (1 if btype == 1 else bsize)
        if word & 1:
            break
    pos += 4 if header.has_checksum else 0
    return pos - offset if pos <= len(buf) else None
