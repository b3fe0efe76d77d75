"""Hostile and damaged E01 files: the reader raises FormatError (or BadInput), nothing else.

Random byte damage is caught by checksums; the hostile cases re-seal their checksums so the
bounds checks themselves are exercised (offsets outside the file, absurd counts and sizes).
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from formats.errors import FormatError
from formats.extent import Extent
from imager.errors import ImagerError
from imager.image.ewf import EwfReader, EwfSink
from tests.ewf_support import sections

SECTORS = 64 * 6


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("hostile")
    data = os.urandom(64 * 512 * 3) + bytes(64 * 512 * 2) + b"abc" * (64 * 512 // 3 + 1)
    sink = EwfSink(str(tmp / "g"), sector_size=512, sector_count=SECTORS)
    sink.write(Extent(0, SECTORS), data[:SECTORS * 512])
    sink.finalize(None)
    return (tmp / "g.E01").read_bytes()


def read_all(path: Path) -> bytes:
    reader = EwfReader(str(path))
    try:
        for chunk in reader.chunks():
            reader.read_chunk(chunk)
        return reader.read(0, reader.sector_count)
    finally:
        reader.close()


def reseal(buf: bytearray, start: int, length: int) -> None:
    """Recompute the Adler-32 stored right after ``buf[start:start+length]``."""
    buf[start + length:start + length + 4] = struct.pack("<I", zlib.adler32(
        bytes(buf[start:start + length])))


def outcome(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "h.E01"
    path.write_bytes(raw)
    try:
        read_all(path)
    except (FormatError, ImagerError) as err:
        return type(err).__name__
    return "ok"


def test_random_damage(tmp_path: Path, good: bytes) -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(400):
        raw = bytearray(good)
        if rng.random() < 0.7:
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        else:
            raw = raw[:rng.randrange(len(raw))]
        seen.add(outcome(tmp_path, bytes(raw)))
    assert "ChecksumMismatch" in seen and "Truncated" in seen


def test_hostile_descriptors(tmp_path: Path, good: bytes) -> None:
    rng = random.Random(8)
    walked = sections(good)
    for _ in range(200):
        raw = bytearray(good)
        _, off, _, _ = rng.choice(walked)
        field = rng.choice([16, 24])
        value = rng.choice([0, 1, 75, off, off + 1, len(good) + 1, 2**63 - 1, 2**64 - 1,
                            rng.randrange(2**64)])
        raw[off + field:off + field + 8] = struct.pack("<Q", value)
        reseal(raw, off, 72)
        assert outcome(tmp_path, bytes(raw)) in ("ok", "Truncated", "InvalidField",
                                                 "FormatError", "ChecksumMismatch")


def test_hostile_tables_and_volume(tmp_path: Path, good: bytes) -> None:
    rng = random.Random(9)
    where = {k: off for k, off, _, _ in sections(good)}
    table, volume = where["table"] + 76, where["volume"] + 76
    n = struct.unpack_from("<I", good, table)[0]
    for _ in range(200):
        raw = bytearray(good)
        target = rng.choice(["entry", "count", "base", "volume"])
        if target == "entry":
            i = rng.randrange(n)
            raw[table + 24 + 4 * i:table + 28 + 4 * i] = struct.pack("<I", rng.randrange(2**32))
            raw[where["table2"]:where["table2"] + 16] = b"tableX".ljust(16, b"\0")  # no rescue
            reseal(raw, where["table2"], 72)
            reseal(raw, table + 24, 4 * n)
        elif target in ("count", "base"):
            at, fmt = (table, "<I") if target == "count" else (table + 8, "<Q")
            raw[at:at + struct.calcsize(fmt)] = struct.pack(fmt, rng.randrange(
                2 ** (8 * struct.calcsize(fmt))))
            reseal(raw, table, 20)
        else:
            at = volume + rng.choice([4, 8, 12, 16])
            raw[at:at + 4] = struct.pack("<I", rng.choice([0, 1, 3, 512, 4096, 2**31,
                                                           rng.randrange(2**32)]))
            reseal(raw, volume, 1048)
        assert outcome(tmp_path, bytes(raw)) in ("ok", "Truncated", "InvalidField",
                                                 "FormatError", "ChecksumMismatch")
