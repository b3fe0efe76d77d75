"""Helpers for the restore tests: tool-made GPT+ext4 images and small test readers/targets."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from formats.errors import ChecksumMismatch
from formats.extent import Extent, Kind
from imager.devices.base import BaseTarget, Identity
from imager.image.base import Chunk

MiB = 1 << 20

# (name, sgdisk size spec, content): "ext4" = mkfs.ext4 -d, "random" = urandom bytes, "zero"
LAYOUT = (("boot", "+1M", "random"), ("system", "+2M", "ext4"), ("modemst1", "+256K", "random"),
          ("cache", "+512K", "zero"), ("userdata", "0", "ext4"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sgdisk_parts(path: str | Path) -> dict[str, tuple[int, int]]:
    """name -> (first LBA, last LBA) as sgdisk reports them (the oracle)."""
    out = subprocess.run(["sgdisk", "-p", str(path)], check=True, capture_output=True,
                         text=True).stdout
    parts = {}
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Number"))
    for line in lines[start + 1:]:
        fields = line.split()
        if len(fields) >= 7:
            parts[fields[6]] = (int(fields[1]), int(fields[2]))
    return parts


def make_gpt_image(path: Path, size: int = 8 * MiB, seed: int = 1,
                   layout: tuple[tuple[str, str, str], ...] = LAYOUT) -> dict[str, tuple[int, int]]:
    """A GPT image made by sgdisk, ext4 filesystems by mkfs.ext4 -d, random raw partitions."""
    with open(path, "wb") as f:
        f.truncate(size)
    cmd = ["sgdisk", "-o"]
    for i, (name, spec, _) in enumerate(layout, 1):
        cmd += ["-n", f"{i}:0:{spec}", "-c", f"{i}:{name}"]
    subprocess.run(cmd + [str(path)], check=True, capture_output=True)
    parts = sgdisk_parts(path)
    rng = _rng(seed)
    files = path.parent / f"{path.name}.files"
    files.mkdir(exist_ok=True)
    (files / "hello.txt").write_text(f"hello {seed}\n")
    (files / "blob.bin").write_bytes(rng(150_000))
    with open(path, "r+b") as f:
        for name, _, content in layout:
            first, last = parts[name]
            if content == "random":
                f.seek(first * 512)
                f.write(rng((last - first + 1) * 512))
    for name, _, content in layout:
        if content == "ext4":
            first, last = parts[name]
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={first * 512}", "-d",
                            str(files), str(path), f"{(last - first + 1) // 2}k"],
                           check=True, capture_output=True)
    return parts


def _rng(seed: int):
    counter = [0]

    def take(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(f"{seed}:{counter[0]}".encode()).digest() * 64
        return bytes(out[:n])
    return take


def e2fsck_clean(image: Path, first: int, last: int, tmp: Path) -> subprocess.CompletedProcess:
    """Run ``e2fsck -fn`` on a copy of the partition's bytes."""
    part = tmp / f"part-{first}.img"
    with open(image, "rb") as src, open(part, "wb") as dst:
        src.seek(first * 512)
        dst.write(src.read((last - first + 1) * 512))
    return subprocess.run(["e2fsck", "-fn", str(part)], check=False, capture_output=True,
                          text=True)


class ChunkedFileReader:
    """An ImageReader over a raw file with sha256 check values taken when it is opened.

    Stands in for a checked image format: changing the file afterwards (a bit flip) makes
    read_chunk raise ChecksumMismatch, as a native image does.
    """

    def __init__(self, path: str | Path, sector_size: int = 512,
                 chunk_sectors: int = 1024) -> None:
        self.path = str(path)
        self.sector_size, self.chunk_sectors = sector_size, chunk_sectors
        self.sector_count = os.path.getsize(path) // sector_size
        self.fd = os.open(self.path, os.O_RDONLY)
        self._chunks = list(self._scan())
        self.read_chunk_calls = 0

    def _scan(self) -> Iterator[Chunk]:
        for index, lba in enumerate(range(0, self.sector_count, self.chunk_sectors)):
            count = min(self.chunk_sectors, self.sector_count - lba)
            data = self.read(lba, count)
            kind = Kind.ZERO if data.count(0) == len(data) else Kind.DATA
            yield Chunk(index, Extent(lba, count, kind), hashlib.sha256(data).hexdigest())

    def chunks(self) -> Iterator[Chunk]:
        return iter(self._chunks)

    def read_chunk(self, chunk: Chunk) -> bytes:
        self.read_chunk_calls += 1
        data = self.read(chunk.extent.start_lba, chunk.extent.count)
        actual = hashlib.sha256(data).hexdigest()
        if actual != chunk.check:
            raise ChecksumMismatch("test chunk", expected=chunk.check, actual=actual,
                                   lba=chunk.extent.start_lba, chunk=chunk.index)
        return data

    def read(self, lba: int, count: int) -> bytes:
        return os.pread(self.fd, count * self.sector_size, lba * self.sector_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class MemTarget(BaseTarget):
    """An in-memory Target whose writes at ``bad_lba`` land corrupted ``bad_writes`` times."""

    def __init__(self, size: int, sector_size: int = 512, bad_lba: int = -1,
                 bad_writes: int = 0) -> None:
        super().__init__(sector_size, size // sector_size,
                         Identity(kind="memory", path="mem", size_bytes=size,
                                  sector_size=sector_size))
        self.buf = bytearray(size)
        self.bad_lba, self.bad_writes, self.writes = bad_lba, bad_writes, 0

    def _read(self, lba: int, count: int) -> bytes:
        return bytes(self.buf[lba * self.sector_size:(lba + count) * self.sector_size])

    def _write(self, lba: int, data: memoryview) -> None:
        self.writes += 1
        data = bytearray(data)
        count = len(data) // self.sector_size
        if self.bad_writes and lba <= self.bad_lba < lba + count:
            self.bad_writes -= 1
            data[(self.bad_lba - lba) * self.sector_size] ^= 0x01
        self.buf[lba * self.sector_size:lba * self.sector_size + len(data)] = data
