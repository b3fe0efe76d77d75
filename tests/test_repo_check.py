"""`imager check` finds damage and names it: pack, chunk, affected snapshots and partitions."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import need_tool
from tests.repo_support import CHUNK, build_phone, change_chunks, imager

VICTIM = 10    # chunk 10 = LBA 20480..22527: inside boot_a (sgdisk: 14336..22527)


def partition_of(image: Path, lba: int) -> str:
    out = subprocess.run(["sgdisk", "-p", str(image)], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 7 and f[0].isdigit() and int(f[1]) <= lba <= int(f[2]):
            return f[-1]
    raise AssertionError(f"no partition holds LBA {lba}")


@pytest.fixture(scope="module")
def repo_pair(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two snapshots sharing the victim chunk (a later change elsewhere)."""
    need_tool("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
    d = tmp_path_factory.mktemp("repo-check")
    phone = build_phone(d / "phone.img")
    repo = d / "repo"
    assert imager("backup", phone, repo, "--chunk-size", "1M", "-q")[0] == 0
    with open(phone, "rb") as f:
        f.seek(VICTIM * CHUNK)
        digest = hashlib.sha256(f.read(CHUNK)).hexdigest()  # the chunk's name, from the image
    change_chunks(phone, [100], seed=5)
    assert imager("backup", phone, repo, "-q")[0] == 0
    ids = sorted(p.stem for p in (repo / "snapshots").glob("*.json"))
    return SimpleNamespace(phone=phone, repo=repo, digest=digest, ids=ids)


def locate(repo: Path, digest: str) -> tuple[str, int, int]:
    """(pack id, record offset, stored length) of a chunk, from the pack indexes."""
    from formats.repo import parse_index

    for idx in (repo / "index").glob("*.idx"):
        for e in parse_index(idx.read_bytes()).entries:
            if e.digest.hex() == digest:
                return idx.stem, e.offset, e.stored_len
    raise AssertionError(f"chunk {digest} not indexed")


def test_clean_repository_checks_clean(repo_pair: SimpleNamespace) -> None:
    rc, out, _ = imager("check", repo_pair.repo, "--read-data")
    assert rc == 0 and "no errors" in out and "2 snapshot(s)" in out


def test_a_flipped_pack_byte_is_found_and_named(repo_pair: SimpleNamespace,
                                                tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(repo_pair.repo, repo)
    pack_id, offset, stored = locate(repo, repo_pair.digest)
    pack = repo / "packs" / pack_id[:2] / f"{pack_id}.pack"
    with open(pack, "r+b") as f:
        f.seek(offset + 48 + stored // 2)   # the middle of the chunk's compressed bytes
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x40]))
    assert imager("check", repo)[0] == 0           # metadata alone cannot see it
    rc, out, _ = imager("check", repo, "--read-data")
    assert rc == 3
    (line,) = [x for x in out.splitlines() if x.startswith("error")]
    lba = VICTIM * CHUNK // 512
    assert f"pack {pack_id}" in line and repo_pair.digest in line
    for snap_id in repo_pair.ids:
        assert f"snapshot {snap_id} LBA {lba}+{CHUNK // 512}" in line
    assert f"({partition_of(repo_pair.phone, lba)})" in line
    rc, _, err = imager("restore", f"{repo}@latest", tmp_path / "out.img", "--yes", "-q")
    assert rc != 0 and repo_pair.digest in err


def test_a_damaged_index_is_reported_with_the_chunks_it_hid(repo_pair: SimpleNamespace,
                                                            tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(repo_pair.repo, repo)
    pack_id, _, _ = locate(repo, repo_pair.digest)
    idx = repo / "index" / f"{pack_id}.idx"
    data = bytearray(idx.read_bytes())
    data[60] ^= 1
    idx.write_bytes(bytes(data))
    rc, out, _ = imager("check", repo)
    assert rc == 3
    assert f"pack index {pack_id}" in out and "checksum mismatch" in out
    assert f"chunk {repo_pair.digest} is in no pack index" in out
    rc, _, err = imager("prune", repo)
    assert rc == 3 and "prune refused" in err
    assert (repo / "packs" / pack_id[:2] / f"{pack_id}.pack").exists()
