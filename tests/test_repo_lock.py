"""The repository lock: a second process is refused naming the holder; stale locks are found."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.repo_support import MiB, imager


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """A 4 MiB random image and an empty repository with 1 MiB chunks."""
    from imager.repo.store import Repository

    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(4 * MiB))
    repo = tmp_path / "repo"
    Repository.init(repo, chunk_size=MiB)
    return image, repo


HOLDER = """
import sys, time
from pathlib import Path
from imager.repo.lock import RepoLock
RepoLock(Path(sys.argv[1]), "imager backup (test holder)").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_second_process_is_refused_with_the_holder_named(small: tuple[Path, Path]) -> None:
    image, repo = small
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        for extra in ((), ("--break-lock",)):  # a live holder on this host is never broken
            rc, _, err = imager("backup", image, repo, "-q", *extra)
            assert rc == 1
            assert f"is locked by pid {holder.pid} on host {socket.gethostname()}" in err
            assert "imager backup (test holder)" in err
        rc, _, err = imager("prune", repo, "--keep-last", "1")
        assert rc == 1 and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the lock is stale, detected and named
    rc, out, _ = imager("check", repo)
    assert rc == 0 and "stale lock" in out and f"pid {holder.pid}" in out
    rc, _, err = imager("backup", image, repo, "-q")
    assert rc == 1 and "stale lock" in err and f"pid {holder.pid}" in err and "--break-lock" in err
    assert not list((repo / "snapshots").iterdir())
    rc, _, err = imager("backup", image, repo, "-q", "--break-lock")
    assert rc == 0, err
    assert not (repo / "lock").exists()
    assert len(list((repo / "snapshots").iterdir())) == 1


def test_lock_of_another_host_is_not_called_stale(small: tuple[Path, Path]) -> None:
    image, repo = small
    (repo / "lock").write_text(json.dumps({"pid": 1, "host": "build-server-7", "time": 0,
                                           "time_iso": "2026-01-01T00:00:00Z",
                                           "command": "imager prune"}))
    rc, _, err = imager("backup", image, repo, "-q")
    assert rc == 1 and "locked by pid 1 on host build-server-7" in err and "another host" in err
    rc, _, err = imager("backup", image, repo, "-q", "--break-lock")
    assert rc == 0, err


def test_a_dead_pid_on_this_host_is_stale(small: tuple[Path, Path]) -> None:
    from imager.repo.lock import RepoLock, RepositoryLocked

    _, repo = small
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (repo / "lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                           "command": "imager backup"}))
    with pytest.raises(RepositoryLocked) as err:
        RepoLock(repo, "test").acquire()
    assert err.value.stale and f"pid {pid}" in str(err.value)
