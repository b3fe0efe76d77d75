"""Helpers shared by the acquire/native/resume tests (oracles: sgdisk, zstd, coreutils)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need_tool

MiB = 1 << 20
PHONE_BYTES = 128 * MiB


def build_source(path: Path, seed: int = 1) -> Path:
    """A sample phone image (GPT by sgdisk, ext4/vfat by mkfs, random/0xFF/zero regions)."""
    need_tool("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
    from fixtures.phone import build_phone

    return build_phone(path, PHONE_BYTES, seed)


@pytest.fixture(scope="session")
def phone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample phone image, built once per session."""
    return build_source(tmp_path_factory.mktemp("phone") / "phone.img")


def run_cli(*args: str, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``python -m imager ARGS`` in a subprocess (a real process: it can be killed)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "imager", *args], input=stdin,
                          capture_output=True, env=full_env, cwd=REPO, check=False)


def cli(*args: str) -> tuple[int, str, str]:
    """``imager ARGS`` in-process (fast): (exit code, stdout, stderr)."""
    from imager.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def tool_hash(tool: str, path: Path | str) -> str:
    """``sha256sum``/``md5sum``/``sha1sum`` of a file: the independent oracle."""
    need_tool(tool)
    return subprocess.run([tool, str(path)], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def zstd_d_sha256(image: Path | str) -> str:
    """sha256 of what stock ``zstd -d`` makes of the image."""
    need_tool("zstd")
    proc = subprocess.Popen(["zstd", "-d", "-c", str(image)], stdout=subprocess.PIPE)
    h = hashlib.sha256()
    assert proc.stdout is not None
    while block := proc.stdout.read(MiB):
        h.update(block)
    assert proc.wait() == 0
    return h.hexdigest()


def sgdisk_partitions(path: Path | str) -> list[tuple[str, int, int]]:
    """(name, first_lba, last_lba) of every partition, as ``sgdisk -p`` prints them."""
    need_tool("sgdisk")
    out = subprocess.run(["sgdisk", "-p", str(path)], check=True, capture_output=True,
                         text=True).stdout
    parts = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+\S+\s+(.*)$", line)
        if m:
            parts.append((m[4].strip(), int(m[2]), int(m[3])))
    return parts


def show_json(image: Path | str) -> dict:
    code, out, err = cli("show", "--json", str(image))
    assert code == 0, err
    return json.loads(out)


def flip_bit(path: Path | str, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def small_source(path: Path, seed: int = 7, mib: int = 12) -> Path:
    """A small unpartitioned source: random, zero and 0xFF megabytes, and a short tail."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(mib):
            kind = i % 4
            f.write(rng.randbytes(MiB) if kind in (0, 3) else
                    bytes(MiB) if kind == 1 else b"\xff" * MiB)
        f.write(rng.randbytes(512 * 5))
    return path
