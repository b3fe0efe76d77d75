"""Helpers shared by the rescue tests (oracles: GNU ddrescue and ddrescuelog)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need_tool


def imager(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "imager", "rescue", *map(str, args),
                           "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def ddrescue(*args: str | Path) -> None:
    need_tool("ddrescue")
    subprocess.run(["ddrescue", "-q", "-d", "-b512", *map(str, args)], check=True,
                   capture_output=True, timeout=120)


def listed(mapfile: Path, states: str) -> list[int]:
    """512-byte block numbers in ``states`` according to GNU ddrescuelog."""
    need_tool("ddrescuelog")
    out = subprocess.run(["ddrescuelog", "-b512", f"-l{states}", str(mapfile)], check=True,
                         capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def assert_rescued(data: bytes, out: Path, mapfile: Path, bad: list[int]) -> None:
    """Every good sector byte-exact, bad sectors never written, the bad set exactly ``bad``."""
    got = out.read_bytes()
    assert len(got) == len(data)
    assert listed(mapfile, "-") == sorted(bad)
    assert listed(mapfile, "?*/") == []
    wrong = [lba for lba in range(len(data) // 512) if lba not in bad
             and got[lba * 512:(lba + 1) * 512] != data[lba * 512:(lba + 1) * 512]]
    assert wrong == []
    assert all(got[lba * 512:(lba + 1) * 512] == bytes(512) for lba in bad)
