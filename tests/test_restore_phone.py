"""The sample phone (fixtures/phone.py): native image -> another "phone" (a loop device)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from fixtures.phone import build_phone
from imager.cli import main
from tests.conftest import loop_device, need_tool
from tests.restore_support import MiB, e2fsck_clean, sgdisk_parts

IDENTITY = ("persist", "modemst1", "modemst2", "fsg", "fsc")


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need_tool("sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "e2fsck")
    work = tmp_path_factory.mktemp("phone")
    raw = build_phone(work / "phone.img", 128 * MiB, seed=5)
    native = work / "phone.native"
    assert main(["acquire", str(raw), str(native), "--quiet"]) == 0
    return raw, native


def test_whole_phone_onto_another_phone_keeps_its_identity(phone, tmp_path, monkeypatch,
                                                           capsys) -> None:
    raw, native = phone
    parts = sgdisk_parts(raw)
    backing = tmp_path / "other-phone.img"
    backing.write_bytes(b"\xee" * raw.stat().st_size)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with loop_device(backing) as dev:
        code = main(["restore", str(native), dev, "--yes", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert sorted(summary["skipped_identity"]) == sorted(IDENTITY)
    got, want = backing.read_bytes(), raw.read_bytes()
    kept = sorted((parts[n][0] * 512, (parts[n][1] + 1) * 512) for n in IDENTITY)
    pos = 0
    for lo, hi in kept:  # identity partitions untouched, every other byte restored
        assert got[pos:lo] == want[pos:lo]
        assert got[lo:hi] == b"\xee" * (hi - lo)
        pos = hi
    assert got[pos:] == want[pos:]
    for name in ("system_a", "userdata"):
        fsck = e2fsck_clean(backing, *parts[name], tmp_path)
        assert fsck.returncode == 0, fsck.stdout


def test_include_identity_restores_every_byte(phone, tmp_path, monkeypatch, capsys) -> None:
    raw, native = phone
    backing = tmp_path / "same.img"
    backing.write_bytes(b"\xee" * raw.stat().st_size)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with loop_device(backing) as dev:
        code = main(["restore", str(native), dev, "--yes", "-q", "--include-identity",
                     "--zeros", "discard"])
    assert code == 0, capsys.readouterr().err
    assert backing.read_bytes() == raw.read_bytes()
