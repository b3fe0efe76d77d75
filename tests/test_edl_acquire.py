"""Whole-phone acquisition over EDL (Sahara + Firehose), through real pyusb on the emulator.

Oracles: the emulated phone's backing files (sha256), stock ``zstd -d`` for each LUN image,
``sgdisk`` (which made the tables), and the phone's own record of every Firehose command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.usbemu import EmuBackend
from fixtures.usbemu.edl import EdlPhone
from fixtures.usbemu.firehose import FirehoseFault
from formats.errors import ChecksumMismatch
from imager.cli import main
from imager.phoneset import load_set
from tests.edl_support import make_emmc, sha, unpacked


def acquire(out: str, loader: Path, *extra: str) -> int:
    return main(["acquire", "edl:", out, "--loader", str(loader), "--quiet", *extra])


def test_ufs_phone_every_lun_equals_its_backing_file(bus: EmuBackend, ufs: list[Path],
                                                     loader: Path, tmp_path: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader, memory="UFS"))
    out = tmp_path / "out"
    assert acquire(str(out) + "/", loader) == 0
    pset = load_set(str(out / "phone.imgset.json"))
    assert [e.lun for e in pset.luns] == [0, 1, 2, 3, 4, 5]
    for entry, backing in zip(pset.luns, ufs):
        data = backing.read_bytes()
        image = Path(pset.image_path(entry))
        assert sha(unpacked(image)) == sha(data), f"LUN {entry.lun}"
        assert entry.status == "complete" and entry.sector_size == 4096
        assert entry.sector_count * 4096 == len(data)
        assert entry.hashes["sha256"] == sha(data)
        assert entry.image_sha256 == sha(image.read_bytes())
    assert pset.luns[4].table == "none"
    assert {e.table for i, e in enumerate(pset.luns) if i != 4} == {"gpt"}
    assert pset.complete and pset.not_captured() == []
    # read-only by construction: the phone's record holds no program/erase, one upload
    assert phone.commands_named("program", "erase") == []
    assert {c["command"] for c in phone.commands} <= {"configure", "getstorageinfo", "read"}
    assert phone.uploads == 1


def test_emmc_phone_equals_its_backing_file(bus: EmuBackend, tmp_path: Path,
                                            loader: Path) -> None:
    backing = make_emmc(tmp_path)
    phone = bus.attach(EdlPhone([backing], loader=loader, memory="eMMC", read64=True))
    assert acquire(str(tmp_path / "emmc"), loader) == 0
    pset = load_set(str(tmp_path / "emmc.imgset.json"))
    assert len(pset.luns) == 1 and pset.luns[0].sector_size == 512
    assert sha(unpacked(tmp_path / "emmc.lun0.imgz")) == sha(backing.read_bytes())
    assert pset.luns[0].table == "gpt"
    assert phone.commands_named("program", "erase") == []
    # the host tried UFS first: the eMMC programmer NAKed it, then eMMC was configured
    assert [c["MemoryName"] for c in phone.commands_named("configure")] == ["UFS", "eMMC"]


def test_nak_becomes_the_exact_unread_range(bus: EmuBackend, ufs: list[Path], loader: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    bad = FirehoseFault("nak", lun=3, lba=300, count=3)
    after = FirehoseFault("nak", lun=5, lba=17, count=1, after_data=True)
    bus.attach(EdlPhone(ufs, loader=loader, faults=[bad, after]))
    assert acquire(str(tmp_path / "p"), loader) == 0
    pset = load_set(str(tmp_path / "p.imgset.json"))
    assert pset.luns[3].unread == [[300, 3]] and pset.luns[3].status == "partial"
    assert pset.luns[5].unread == [[17, 1]]
    assert [e.unread for i, e in enumerate(pset.luns) if i not in (3, 5)] == [[]] * 4
    err = capsys.readouterr().err
    assert "LUN 3: 3 sector(s) could not be read (LBA 300+3)" in err
    data = bytearray(ufs[3].read_bytes())
    data[300 * 4096:303 * 4096] = bytes(3 * 4096)  # unread sectors read back as zeros
    assert sha(unpacked(tmp_path / "p.lun3.imgz")) == sha(bytes(data))


def test_timeout_and_reset_resume_and_finish_identical(bus: EmuBackend, ufs: list[Path],
                                                       loader: Path, tmp_path: Path) -> None:
    faults = [FirehoseFault("timeout", lun=0, lba=700), FirehoseFault("reset", lun=2, lba=90),
              FirehoseFault("timeout", lun=5, lba=10, times=2)]
    phone = bus.attach(EdlPhone(ufs, loader=loader, faults=faults))
    assert acquire(str(tmp_path / "p"), loader) == 0
    assert [f.fired for f in faults] == [1, 1, 2]
    assert phone.uploads == 2          # the reset dropped the phone back into Sahara
    pset = load_set(str(tmp_path / "p.imgset.json"))
    for entry, backing in zip(pset.luns, ufs):
        assert entry.status == "complete"
        assert sha(unpacked(Path(pset.image_path(entry)))) == sha(backing.read_bytes())
    assert phone.commands_named("program", "erase") == []


def test_lun_and_partition_narrow_the_set(bus: EmuBackend, ufs: list[Path], loader: Path,
                                          tmp_path: Path) -> None:
    bus.attach(EdlPhone(ufs, loader=loader))
    assert acquire(str(tmp_path / "one"), loader, "--lun", "4") == 0
    pset = load_set(str(tmp_path / "one.imgset.json"))
    assert [e.status for e in pset.luns] == ["skipped"] * 4 + ["complete", "skipped"]
    assert sha(unpacked(tmp_path / "one.lun4.imgz")) == sha(ufs[4].read_bytes())
    assert not (tmp_path / "one.lun0.imgz").exists()
    assert acquire(str(tmp_path / "part"), loader, "--partition", "boot_a") == 0
    pset = load_set(str(tmp_path / "part.imgset.json"))
    assert [e.lun for e in pset.luns if e.image] == [5]
    assert pset.luns[5].status == "partial" and pset.luns[5].not_acquired_sectors > 0
    whole = unpacked(tmp_path / "part.lun5.imgz")
    # boot_a is LBA 136..263 (sgdisk -p on the 4K loop device made by tests/edl_support.py)
    assert whole[136 * 4096:264 * 4096] == ufs[5].read_bytes()[136 * 4096:264 * 4096]
    assert acquire(str(tmp_path / "none"), loader, "--partition", "nosuch") == 2


def test_wrong_loader_is_refused_by_the_phone(bus: EmuBackend, ufs: list[Path], loader: Path,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader))
    other = tmp_path / "other.elf"
    data = bytearray(loader.read_bytes())
    data[-1] ^= 1
    other.write_bytes(bytes(data))
    assert main(["acquire", "edl:", str(tmp_path / "x"), "--loader", str(other), "--quiet"]) == 1
    assert "refused the programmer" in capsys.readouterr().err
    assert phone.uploads == 0 and phone.commands == []
    assert main(["acquire", "edl:", str(tmp_path / "y"), "--quiet"]) == 2


def test_set_manifest_is_self_checksummed(bus: EmuBackend, ufs: list[Path], loader: Path,
                                          tmp_path: Path) -> None:
    bus.attach(EdlPhone(ufs[4:5], loader=loader))
    assert acquire(str(tmp_path / "p"), loader) == 0
    path = tmp_path / "p.imgset.json"
    obj = json.loads(path.read_text())
    assert obj["format"] == "imager-phone-set" and obj["complete"] is True
    obj["luns"][0]["sector_count"] += 1
    path.write_text(json.dumps(obj))
    with pytest.raises(ChecksumMismatch):
        load_set(str(path))


def test_a_phone_that_leaves_is_reported_and_a_rerun_finishes(
        bus: EmuBackend, ufs: list[Path], loader: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imager.devices.usb.edl.REAPPEAR_SECONDS", 0.3)
    phone = bus.attach(EdlPhone(ufs, loader=loader, faults=[FirehoseFault("gone", lun=2,
                                                                          lba=200)]))
    assert acquire(str(tmp_path / "p"), loader) == 1
    err = capsys.readouterr().err
    assert "LUN 2: NOT CAPTURED" in err and "LUN 5: NOT CAPTURED" in err
    assert "NOT captured completely" in err
    pset = load_set(str(tmp_path / "p.imgset.json"))
    assert [e.status for e in pset.luns] == ["complete"] * 2 + ["failed"] * 4
    assert not pset.complete and len(pset.not_captured()) == 4
    kept = (tmp_path / "p.lun0.imgz").stat().st_mtime_ns
    phone.reconnect()                        # plugged back in: Sahara again
    assert acquire(str(tmp_path / "p"), loader) == 0
    pset = load_set(str(tmp_path / "p.imgset.json"))
    assert pset.complete and [e.status for e in pset.luns] == ["complete"] * 6
    for entry, backing in zip(pset.luns, ufs):
        assert sha(unpacked(Path(pset.image_path(entry)))) == sha(backing.read_bytes())
    assert (tmp_path / "p.lun0.imgz").stat().st_mtime_ns == kept      # finished LUN kept
    assert phone.uploads == 2 and phone.commands_named("program", "erase") == []


def test_cli_in_a_subprocess_reaches_the_emulated_phone(ufs: list[Path], loader: Path,
                                                        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from fixtures.usbemu.edl import edl_env
    from tests.conftest import REPO

    record = tmp_path / "firehose.jsonl"
    env = {**os.environ, **edl_env(ufs[3:5], loader, serial="SUBPROC", record=record)}
    proc = subprocess.run([sys.executable, "-m", "imager", "acquire", "edl:@SUBPROC",
                           str(tmp_path / "p"), "--loader", str(loader), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["complete"] is True and len(summary["luns"]) == 2
    for n, backing in enumerate(ufs[3:5]):
        assert sha(unpacked(tmp_path / f"p.lun{n}.imgz")) == sha(backing.read_bytes())
    commands = [json.loads(line)["command"] for line in record.read_text().splitlines()]
    assert "read" in commands and not {"program", "erase"} & set(commands)
