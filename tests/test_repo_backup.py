"""Two backups of the sample phone with ~3 % of its chunks changed in between (issue 11)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import need_tool
from tests.repo_support import (
    CHUNK,
    MiB,
    build_phone,
    change_chunks,
    imager,
    repo_bytes,
    restore_sha256,
    sha256_file,
)

CHANGED = [80, 100, 120]    # 3 of 128 chunks (2.3 %), all inside userdata (sgdisk says 75..127 MiB)
OVERHEAD = 64 * 1024        # pack/record headers, one index per pack, the snapshot document


def sgdisk_partition_of(image: Path, lba: int) -> str:
    """The partition holding ``lba``, as sgdisk reports the table (the oracle)."""
    out = subprocess.run(["sgdisk", "-p", str(image)], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 7 and f[0].isdigit() and int(f[1]) <= lba <= int(f[2]):
            return f[-1]
    return ""


@pytest.fixture(scope="module")
def phone_repo(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    need_tool("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
    d = tmp_path_factory.mktemp("repo-backup")
    phone = build_phone(d / "phone.img")
    first = d / "monday.img"
    shutil.copyfile(phone, first)
    repo = d / "repo"
    rc, _, err = imager("backup", phone, repo, "--chunk-size", "1M", "--tag", "monday", "-q")
    assert rc == 0, err
    size1 = repo_bytes(repo)
    change_chunks(phone, CHANGED, seed=7)
    rc, out2, err = imager("backup", phone, repo, "--tag", "tuesday", "-q", "--json")
    assert rc == 0, err
    docs = json.loads(imager("snapshots", repo, "--json")[1])
    return SimpleNamespace(dir=d, phone=phone, first=first, repo=repo, size1=size1,
                           size2=repo_bytes(repo), out2=json.loads(out2), docs=docs,
                           sha1=sha256_file(first), sha2=sha256_file(phone))


def test_second_backup_stores_only_the_changed_chunks(phone_repo: SimpleNamespace) -> None:
    grown = phone_repo.size2 - phone_repo.size1
    # the changed chunks are random (incompressible): at least their bytes, at most + overhead
    assert len(CHANGED) * CHUNK <= grown <= len(CHANGED) * CHUNK + OVERHEAD
    assert grown < 0.03 * 128 * MiB + OVERHEAD
    assert phone_repo.out2["new_chunks"] == len(CHANGED)
    assert len(CHANGED) * CHUNK <= phone_repo.out2["new_bytes"] <= grown


def test_each_snapshot_restores_to_its_exact_bytes(phone_repo: SimpleNamespace,
                                                   tmp_path: Path) -> None:
    first, second = phone_repo.docs[0]["id"], phone_repo.docs[1]["id"]
    assert phone_repo.sha1 != phone_repo.sha2
    assert restore_sha256(f"{phone_repo.repo}@{first}", tmp_path / "a.img") == phone_repo.sha1
    assert restore_sha256(f"{phone_repo.repo}@{second}", tmp_path / "b.img") == phone_repo.sha2


def test_latest_and_id_prefix_name_snapshots(phone_repo: SimpleNamespace, tmp_path: Path) -> None:
    from tests.repo_support import snapshot_sha256

    assert snapshot_sha256(f"{phone_repo.repo}@latest") == sha256_file(phone_repo.phone)
    prefix = phone_repo.docs[0]["id"][:5]
    assert snapshot_sha256(f"{phone_repo.repo}@{prefix}") == phone_repo.sha1
    rc, _, err = imager("restore", f"{phone_repo.repo}@nosuch", tmp_path / "x.img", "--yes")
    assert rc == 2 and "no snapshot 'nosuch'" in err


def test_snapshots_lists_time_device_size_new_bytes_and_tags(phone_repo: SimpleNamespace) -> None:
    a, b = phone_repo.docs[:2]
    assert [a["tags"], b["tags"]] == [["monday"], ["tuesday"]]
    assert a["size_bytes"] == b["size_bytes"] == 128 * MiB
    assert str(phone_repo.phone) in b["device"]
    assert b["new_bytes"] == phone_repo.out2["new_bytes"]
    assert a["time"] <= b["time"]
    rc, text, _ = imager("snapshots", phone_repo.repo)
    assert rc == 0 and a["id"] in text and b["id"] in text and "tuesday" in text


def test_diff_names_the_changed_partition_and_bytes(phone_repo: SimpleNamespace) -> None:
    a, b = phone_repo.docs[0]["id"], phone_repo.docs[1]["id"]
    rc, out, err = imager("diff", f"{phone_repo.repo}@{a}", f"{phone_repo.repo}@{b}", "--json")
    assert rc == 0, err
    changed = {p["name"]: p["changed_bytes"] for p in json.loads(out)["partitions"]
               if p["changed_bytes"]}
    expected: dict[str, int] = {}
    for index in CHANGED:
        name = sgdisk_partition_of(phone_repo.phone, index * CHUNK // 512)
        expected[name] = expected.get(name, 0) + CHUNK
    assert changed == expected


def test_backup_of_an_unchanged_device_adds_less_than_1_mib(phone_repo: SimpleNamespace) -> None:
    before = repo_bytes(phone_repo.repo)
    rc, out, err = imager("backup", phone_repo.phone, phone_repo.repo, "-q", "--json")
    assert rc == 0, err
    assert json.loads(out)["new_chunks"] == 0
    assert 0 < repo_bytes(phone_repo.repo) - before < MiB


def test_export_extract_and_show_read_a_snapshot(phone_repo: SimpleNamespace,
                                                 tmp_path: Path) -> None:
    need_tool("simg2img", "zstd")
    first = f"{phone_repo.repo}@{phone_repo.docs[0]['id']}"
    assert imager("export", first, "--to", "raw", tmp_path / "a.raw")[0] == 0
    assert sha256_file(tmp_path / "a.raw") == phone_repo.sha1
    rc, _, err = imager("export", first, "--to", "zst", tmp_path / "a.zst")
    assert rc == 0, err
    subprocess.run(["zstd", "-q", "-d", tmp_path / "a.zst", "-o", tmp_path / "a.unzst"], check=True)
    assert sha256_file(tmp_path / "a.unzst") == phone_repo.sha1
    assert imager("export", first, "--to", "simg", tmp_path / "a.simg")[0] == 0
    subprocess.run(["simg2img", tmp_path / "a.simg", tmp_path / "a.unsparsed"], check=True)
    assert sha256_file(tmp_path / "a.unsparsed") == phone_repo.sha1
    rc, _, err = imager("extract", first, "--partition", "boot_a", "-o", tmp_path / "boot")
    assert rc == 0, err
    out = subprocess.run(["sgdisk", "-i", "7", phone_repo.first], check=True,
                         capture_output=True, text=True).stdout
    lo = int(out.split("First sector: ")[1].split()[0])
    hi = int(out.split("Last sector: ")[1].split()[0])
    with open(phone_repo.first, "rb") as f:
        f.seek(lo * 512)
        assert (tmp_path / "boot").read_bytes() == f.read((hi - lo + 1) * 512)
    rc, text, _ = imager("show", first)
    assert rc == 0 and phone_repo.sha1 in text and "userdata" in text


def test_partition_backup_stores_only_that_partition(phone_repo: SimpleNamespace,
                                                     tmp_path: Path) -> None:
    from imager.repo.reader import SnapshotReader

    repo = tmp_path / "repo"
    rc, out, err = imager("backup", phone_repo.phone, repo, "--partition", "boot_*",
                          "--chunk-size", "1M", "-q", "--json")
    assert rc == 0, err
    reader = SnapshotReader(f"{repo}@latest")
    kinds = {e.kind.value for e in reader.extents()}
    assert "not_acquired" in kinds
    with open(phone_repo.phone, "rb") as f:
        f.seek(14336 * 512)                      # boot_a..boot_b: LBA 14336..30719 (sgdisk)
        assert reader.read(14336, 16384) == f.read(16384 * 512)
    reader.close()
    assert json.loads(out)["data_bytes"] <= 10 * MiB


def test_restore_one_partition_of_an_older_snapshot(phone_repo: SimpleNamespace,
                                                    tmp_path: Path) -> None:
    target = tmp_path / "phone.img"
    shutil.copyfile(phone_repo.phone, target)
    with open(target, "r+b") as f:               # wreck boot_a (LBA 14336..22527, sgdisk)
        f.seek(14336 * 512)
        f.write(b"\xa5" * 8192 * 512)
    first = f"{phone_repo.repo}@{phone_repo.docs[0]['id']}"
    rc, _, err = imager("restore", first, target, "--partition", "boot_a", "--yes", "-q")
    assert rc == 0, err
    # boot_a is unchanged between the snapshots, so the whole file is the changed phone again
    assert sha256_file(target) == sha256_file(phone_repo.phone)
