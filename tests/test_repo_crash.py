"""kill -9 at several points of backup, forget and prune: the repository stays consistent,
`imager check --read-data` is clean and every finished snapshot restores exactly."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import need_tool
from tests.repo_support import (
    MiB,
    build_phone,
    change_chunks,
    imager,
    imager_subprocess,
    repo_bytes,
    sha256_file,
    snapshot_sha256,
)

CRASH_ENV = "IMAGER_REPO_CRASH"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Phone A, phone B (5 chunks changed), a repository holding a snapshot of A (small packs,
    so a backup publishes several) and one holding snapshots of A and B."""
    need_tool("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
    from imager.repo.store import Repository

    d = tmp_path_factory.mktemp("repo-crash")
    a = build_phone(d / "a.img")
    b = d / "b.img"
    shutil.copyfile(a, b)
    change_chunks(b, [3, 40, 90, 100, 110], seed=3)
    repo_a = d / "repo-a"
    Repository.init(repo_a, chunk_size=MiB, pack_size=4 * MiB)
    assert imager("backup", a, repo_a, "-q")[0] == 0
    repo_ab = d / "repo-ab"
    shutil.copytree(repo_a, repo_ab)
    assert imager("backup", b, repo_ab, "-q")[0] == 0
    return SimpleNamespace(a=a, b=b, repo_a=repo_a, repo_ab=repo_ab,
                           sha_a=sha256_file(a), sha_b=sha256_file(b))


def assert_clean_and_exact(repo: Path, expected: dict[str, str]) -> None:
    """check --read-data exits 0 with no error, and each snapshot reads back to its sha256."""
    rc, out, err = imager("check", repo, "--read-data", "-q")
    assert rc == 0, out + err
    assert not [line for line in out.splitlines() if line.startswith("error")]
    for snap_id, sha in expected.items():
        assert snapshot_sha256(f"{repo}@{snap_id}") == sha


def snapshot_ids(repo: Path) -> list[str]:
    return sorted(p.stem for p in (repo / "snapshots").glob("*.json"))


@pytest.mark.parametrize("point", ["chunk:20", "pack-published:2", "index-published:1",
                                   "before-snapshot", "snapshot-published"])
def test_backup_killed_keeps_every_finished_snapshot(world: SimpleNamespace, tmp_path: Path,
                                                     point: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(world.repo_a, repo)
    (first,) = snapshot_ids(repo)
    proc = imager_subprocess("backup", world.b, repo, "-q", env={CRASH_ENV: point})
    assert proc.returncode == -9, proc.stderr
    ids = snapshot_ids(repo)
    finished = point == "snapshot-published"
    assert len(ids) == (2 if finished else 1)
    expected = {first: world.sha_a}
    if finished:
        expected[next(i for i in ids if i != first)] = world.sha_b
    assert_clean_and_exact(repo, expected)
    # the dead backup's lock is stale: refused until broken, then the backup completes
    rc, _, err = imager("backup", world.b, repo, "-q")
    assert rc == 1 and "stale lock" in err and "--break-lock" in err
    rc, _, err = imager("backup", world.b, repo, "-q", "--break-lock")
    assert rc == 0, err
    assert snapshot_sha256(f"{repo}@latest") == world.sha_b


@pytest.mark.parametrize("verb,point", [
    ("forget", "snapshot-deleted"), ("prune", "pack-published:1"), ("prune", "index-published:1"),
    ("prune", "gc-new-packs"), ("prune", "gc-indexes-deleted")])
def test_prune_killed_never_loses_a_kept_snapshot(world: SimpleNamespace, tmp_path: Path,
                                                  verb: str, point: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(world.repo_ab, repo)
    from imager.repo.snapshot import digests_of, list_snapshots
    from imager.repo.store import Repository

    old, new = (d["id"] for d in list_snapshots(Repository(repo)))
    before = repo_bytes(repo)
    args = ("forget", repo, old) if verb == "forget" else ("prune", repo, "--keep-last", "1")
    proc = imager_subprocess(*args, env={CRASH_ENV: point})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    survivors = {new: world.sha_b}
    if old in snapshot_ids(repo):
        survivors[old] = world.sha_a
    assert_clean_and_exact(repo, survivors)
    rc, _, err = imager("prune", repo, "--keep-last", "1", "--break-lock")
    assert rc == 0, err
    assert snapshot_ids(repo) == [new]
    assert_clean_and_exact(repo, {new: world.sha_b})
    # what only A used is gone: the repository holds exactly B's chunks, once each
    fresh = Repository(repo)
    (doc,) = list_snapshots(fresh)
    assert set(fresh.index) == digests_of(doc)
    assert sum(len(i.entries) for i in fresh.pack_indexes.values()) == len(fresh.index)
    assert repo_bytes(repo) < before
