"""Helpers for the E01 tests: sources with known content, ewf-tools runners, a section walker.

The walker here is written with struct only (not formats.ewf) so the tests have their own
reading of ewfacquire's files, taken from the EWF document.
"""

from __future__ import annotations

import hashlib
import random
import struct
import subprocess
from pathlib import Path

from tests.conftest import need_tool

SECTOR = 512


def make_source(path: Path, sectors: int = 6244, seed: int = 9) -> bytes:
    """Random, zero, 0xAB-fill and random again: every chunk kind EWF writers treat apart."""
    rng = random.Random(seed)
    quarter = sectors // 4 * SECTOR
    data = (rng.randbytes(quarter) + bytes(quarter) + b"\xab" * quarter
            + rng.randbytes(sectors * SECTOR - 3 * quarter))
    path.write_bytes(data)
    return data


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def ewfacquire(source: Path, target: Path, *extra: str) -> Path:
    """Run ewfacquire unattended (EnCase 6, deflate fast); returns the .E01 path."""
    need_tool("ewfacquire")
    subprocess.run(["ewfacquire", "-u", "-q", "-t", str(target), "-f", "encase6",
                    "-c", "deflate:fast", "-C", "CASE-7", "-D", "ref disk", "-e", "Examiner X",
                    "-E", "EV-1", "-N", "made by ewfacquire", *extra, str(source)],
                   check=True, capture_output=True, timeout=60)
    return target.with_name(target.name + ".E01")


def ewfverify(e01: Path) -> subprocess.CompletedProcess[str]:
    need_tool("ewfverify")
    return subprocess.run(["ewfverify", "-q", str(e01)], check=False, capture_output=True,
                          text=True, timeout=60)


def ewfinfo(e01: Path) -> str:
    need_tool("ewfinfo")
    return subprocess.run(["ewfinfo", str(e01)], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def ewfexport_raw(e01: Path, out: Path) -> bytes:
    """The media bytes as libewf's ewfexport reads them."""
    need_tool("ewfexport")
    subprocess.run(["ewfexport", "-q", "-u", "-f", "raw", "-t", str(out), str(e01)],
                   check=True, capture_output=True, timeout=60)
    return out.with_name(out.name + ".raw").read_bytes()


def sections(data: bytes) -> list[tuple[str, int, int, int]]:
    """(type, offset, next offset, size) of every section of one segment file."""
    out, offset = [], 13
    while True:
        kind = data[offset:offset + 16].rstrip(b"\0").decode()
        nxt, size = struct.unpack_from("<QQ", data, offset + 16)
        out.append((kind, offset, nxt, size))
        if nxt == offset:
            return out
        offset = nxt


def payload(data: bytes, kind: str, nth: int = 0) -> bytes:
    """The payload (after the 76-byte descriptor) of the ``nth`` section of ``kind``."""
    found = [(off, size) for k, off, _, size in sections(data) if k == kind]
    off, size = found[nth]
    return data[off + 76:off + size]
