"""Helpers for the snapshot repository tests (tests/test_repo_*.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

MiB = 1 << 20
PHONE_SIZE = 128 * MiB          # the smallest sample phone fixtures/phone.py builds
CHUNK = MiB                     # the tests' repository chunk size: 128 chunks per phone


_built: dict[int, Path] = {}


def build_phone(path: Path, seed: int = 1) -> Path:
    """The lead's sample phone (sgdisk + mkfs.ext4/vfat + seeded random regions) at ``path``.

    Built once per test session and seed, then copied: every module gets its own file.
    """
    import atexit
    import shutil
    import tempfile

    from fixtures.phone import build_phone as build

    master = _built.get(seed)
    if master is None or not master.exists():
        workdir = tempfile.mkdtemp(prefix="repo-phone-")
        atexit.register(shutil.rmtree, workdir, True)
        master = Path(workdir) / f"phone-{seed}.img"
        build(master, PHONE_SIZE, seed)
        _built[seed] = master
    shutil.copyfile(master, path)
    return Path(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def repo_bytes(repo: Path) -> int:
    """Size of the repository on disk: every file's length (excluding the lock)."""
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and p.name != "lock")


def change_chunks(image: Path, chunks: list[int], seed: int) -> None:
    """Overwrite whole chunks with fresh random bytes (what changed on the phone)."""
    rng = random.Random(seed)
    with open(image, "r+b") as f:
        for index in chunks:
            f.seek(index * CHUNK)
            f.write(rng.randbytes(CHUNK))


def imager(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from imager.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def imager_subprocess(*args: str, env: dict[str, str] | None = None,
                      timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI as its own process (for kill -9 and lock tests)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "imager", *map(str, args)], check=False, cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def snapshot_sha256(spec: str) -> str:
    """sha256 of a snapshot's bytes as SnapshotReader delivers them (every chunk verified)."""
    from imager.repo.reader import SnapshotReader

    reader = SnapshotReader(spec)
    try:
        h = hashlib.sha256()
        for chunk in reader.chunks():
            h.update(reader.read_chunk(chunk))
        return h.hexdigest()
    finally:
        reader.close()


def restore_sha256(spec: str, out: Path) -> str:
    """Restore a snapshot with `imager restore` onto a new file; the file's sha256."""
    rc, _, err = imager("restore", spec, out, "--yes", "-q")
    assert rc == 0, err
    return sha256_file(out)
