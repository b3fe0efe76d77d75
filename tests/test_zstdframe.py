"""formats.zstdframe against stock zstd and the seekable-format spec (specs/zstd-seekable.md)."""

from __future__ import annotations

import hashlib
import struct
import subprocess

import pytest
import zstandard

from formats.errors import BadMagic, FormatError, InvalidField, Truncated
from formats.zstdframe import (
    SeekEntry,
    build_fill_frame,
    build_seek_table,
    build_skippable,
    frame_length,
    parse_frame_header,
    parse_seek_table,
    parse_skippable,
    seek_table_size,
)
from tests.conftest import need_tool

KiB, MiB = 1 << 10, 1 << 20


def xxh32_low(data: bytes) -> int:
    """Low 32 bits of XXH64, as zstd itself computes it (the oracle: libzstd)."""
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return int.from_bytes(frame[-4:], "little")


def zstd_cli(*args: str, data: bytes) -> subprocess.CompletedProcess:
    need_tool("zstd")
    return subprocess.run(["zstd", *args], input=data, capture_output=True, check=False)


@pytest.mark.parametrize("size,fill", [(512, 0), (128 * KiB, 0xFF), (128 * KiB + 512, 0),
                                       (4 * MiB, 0), (4 * MiB - 512, 0x5A), (3 * 512, 0xFF)])
def test_fill_frame_decompresses_with_stock_zstd(size: int, fill: int) -> None:
    frame = build_fill_frame(size, fill, xxh32_low(bytes([fill]) * size))
    out = zstd_cli("-d", "-c", data=frame)
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(bytes([fill]) * size).digest()
    assert zstd_cli("-t", data=frame).returncode == 0


def test_fill_frame_costs_at_most_64_bytes_per_mib() -> None:
    for mib in (1, 4, 64):
        assert len(build_fill_frame(mib * MiB, 0, 0)) <= 64 * mib


def test_fill_frame_wrong_checksum_is_caught_by_zstd() -> None:
    frame = build_fill_frame(MiB, 0, xxh32_low(bytes(MiB)) ^ 1)
    assert zstd_cli("-t", data=frame).returncode != 0


def test_fill_frame_without_checksum_and_frame_header() -> None:
    frame = build_fill_frame(MiB, 7)
    header = parse_frame_header(frame)
    oracle = zstandard.get_frame_parameters(frame)
    assert header.content_size == oracle.content_size == MiB
    assert header.has_checksum is oracle.has_checksum is False
    assert header.window_size == oracle.window_size == 128 * KiB
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes([7]) * MiB


def test_frame_length_matches_zstd_cli_frames() -> None:
    need_tool("zstd")
    a = zstd_cli("-3", "-c", "--check", data=b"abc" * 100000).stdout
    b = zstd_cli("-1", "-c", "--no-check", data=bytes(range(256)) * 999).stdout
    blob = a + b
    assert frame_length(blob) == len(a)
    assert frame_length(blob, len(a)) == len(b)
    assert frame_length(blob[:-1], len(a)) is None  # torn: runs past the end
    head = parse_frame_header(a)
    assert head.has_checksum and zstandard.get_frame_parameters(a).has_checksum
    skip = build_skippable(b"x" * 10, 3)
    assert frame_length(skip + a) == 18
    assert frame_length(skip[:12]) is None


def test_skippable_layout_per_spec() -> None:
    frame = build_skippable(b"hello", 5)
    assert frame == struct.pack("<II", 0x184D2A55, 5) + b"hello"
    parsed = parse_skippable(frame + b"trailing")
    assert (parsed.nibble, parsed.data) == (5, b"hello")
    assert zstd_cli("-d", "-c", data=frame + build_fill_frame(512, 1, xxh32_low(b"\1" * 512))
                    ).stdout == b"\1" * 512
    with pytest.raises(BadMagic):
        parse_skippable(b"\0" * 12)
    with pytest.raises(Truncated):
        parse_skippable(frame[:-1])


def test_seek_table_bytes_per_spec_and_round_trip() -> None:
    entries = [SeekEntry(100, 4096, 0xDEADBEEF), SeekEntry(20, 512, 1)]
    table = build_seek_table(entries)
    payload = struct.pack("<III", 100, 4096, 0xDEADBEEF) + struct.pack("<III", 20, 512, 1) \
        + struct.pack("<IBI", 2, 0x80, 0x8F92EAB1)
    assert table == struct.pack("<II", 0x184D2A5E, len(payload)) + payload
    assert seek_table_size(table[-9:]) == len(table)
    parsed = parse_seek_table(b"junk before" + table)
    assert parsed.entries == tuple(entries) and parsed.has_checksums
    plain = build_seek_table([SeekEntry(1, 2)], with_checksums=False)
    assert parse_seek_table(plain).entries == (SeekEntry(1, 2, None),)
    assert len(plain) == 8 + 8 + 9


def test_stock_zstd_skips_the_seek_table() -> None:
    data = b"payload" * 1000
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    blob = frame + build_seek_table([SeekEntry(len(frame), len(data), xxh32_low(data))])
    assert zstd_cli("-d", "-c", data=blob).stdout == data


@pytest.mark.parametrize("mutate,error", [
    (lambda t: t[:-4] + b"\0\0\0\0", BadMagic),
    (lambda t: t[:-5] + b"\x84" + t[-4:], InvalidField),       # reserved descriptor bit
    (lambda t: t[:-9] + struct.pack("<I", 9) + t[-5:], Truncated),  # more frames than bytes
    (lambda t: t[:4] + b"\xff" + t[5:], InvalidField),          # frame size field disagrees
    (lambda t: b"\0" + t[1:], BadMagic),                        # not a skippable frame
])
def test_seek_table_rejects_damage(mutate: object, error: type) -> None:
    table = build_seek_table([SeekEntry(1, 2, 3), SeekEntry(4, 5, 6)])
    with pytest.raises(error):
        parse_seek_table(mutate(table))  # type: ignore[operator]


def test_frame_header_rejects_garbage() -> None:
    with pytest.raises(BadMagic):
        parse_frame_header(b"\0" * 16)
    with pytest.raises(Truncated):
        parse_frame_header(b"\x28\xb5\x2f\xfd")
    with pytest.raises(InvalidField):
        parse_frame_header(b"\x28\xb5\x2f\xfd\x08" + b"\0" * 10)
    reserved_block = b"\x28\xb5\x2f\xfd\x00\x38" + (3 << 1 | 1).to_bytes(3, "little")
    with pytest.raises(FormatError):
        frame_length(reserved_block)
