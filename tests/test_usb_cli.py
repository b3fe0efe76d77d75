"""The verbs on ``usb-msc:`` sources and targets, in-process and in a subprocess.

Oracles: the emulator's backing file (sha256), stock ``zstd -d`` for the native image, and the
emulated device's record of every SCSI command it received.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.usbemu import (
    WRITE_CLASS,
    EmuBackend,
    EmulatedDevice,
    EndpointDesc,
    InterfaceDesc,
    MscDisk,
)
from fixtures.usbemu.scenarios import msc_env
from imager.cli import main
from tests.conftest import REPO, need_tool

READ_ONLY_OPCODES = {0x00, 0x03, 0x12, 0x1A, 0x25, 0x28, 0x88, 0x9E}


def disk_image(path: Path, size: int = 6 << 20) -> Path:
    """Random data with a zero band and a 0xFF band, so the image has every chunk kind."""
    data = bytearray(os.urandom(size))
    data[size // 3:size // 3 + (1 << 20)] = bytes(1 << 20)
    data[-(1 << 20):] = b"\xff" * (1 << 20)
    path.write_bytes(bytes(data))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpacked(image: Path) -> bytes:
    need_tool("zstd")
    return subprocess.run(["zstd", "-dcq", str(image)], check=True, capture_output=True).stdout


def recorded(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("block", [512, 4096])
def test_acquire_equals_the_backing_file(bus: EmuBackend, tmp_path: Path, block: int) -> None:
    backing = disk_image(tmp_path / "phone.img")
    disk = bus.attach(MscDisk(backing, block_size=block, serial="LUMIA950"))
    out = tmp_path / "phone.imgz"
    assert main(["acquire", "usb-msc:@LUMIA950", str(out), "--quiet"]) == 0
    assert sha(unpacked(out)) == sha(backing.read_bytes())
    assert disk.write_commands() == []
    assert disk.opcodes() <= READ_ONLY_OPCODES


def test_medium_errors_become_exact_unread_ranges(bus: EmuBackend, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    backing = disk_image(tmp_path / "phone.img")
    disk = bus.attach(MscDisk(backing))
    disk.disk.medium_errors.update({5000, 5001, 5002, 9999})
    out = tmp_path / "phone.imgz"
    capsys.readouterr()
    assert main(["acquire", "usb-msc:", str(out), "--quiet", "--json", "--retries", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unread"] == [[5000, 3], [9999, 1]]
    data, original = unpacked(out), backing.read_bytes()
    for lba in range(len(original) // 512):
        if lba not in (5000, 5001, 5002, 9999):
            assert data[lba * 512:(lba + 1) * 512] == original[lba * 512:(lba + 1) * 512], lba
    assert disk.write_commands() == []


def test_acquire_survives_stalls_and_phase_errors(bus: EmuBackend, tmp_path: Path) -> None:
    from fixtures.usbemu import Fault

    backing = disk_image(tmp_path / "phone.img")
    faults = [Fault("stall_data", lba=100), Fault("phase", lba=3000),
              Fault("timeout", lba=7000), Fault("bad_tag", lba=9000)]
    disk = bus.attach(MscDisk(backing, faults=faults))
    out = tmp_path / "phone.imgz"
    assert main(["acquire", "usb-msc:", str(out), "--quiet"]) == 0
    assert sha(unpacked(out)) == sha(backing.read_bytes())
    assert [f.fired for f in faults] == [1, 1, 1, 1]
    assert disk.resets == 3                            # phase, timeout, bad tag
    assert disk.write_commands() == []


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "imager", *args], check=False, cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_disconnect_mid_acquire_then_resume_in_a_subprocess(tmp_path: Path) -> None:
    # 24 chunks of 1 MiB, unplugged while reading the last one: the reader runs at most a
    # few chunks ahead of the writer, which commits every 16, so a prefix is committed
    backing = disk_image(tmp_path / "phone.img", 24 << 20)
    record = tmp_path / "commands.jsonl"
    out = tmp_path / "phone.imgz"
    args = ["acquire", "usb-msc:@EMU0001", str(out), "--quiet", "--chunk-size", "1M"]
    first = run_cli(args, msc_env(backing, record=record,
                                  faults={"faults": [{"kind": "disconnect", "lba": 48000}]}))
    assert first.returncode in (1, 130), first.stderr
    assert "device gone" in first.stderr and "--resume" in first.stderr
    second = run_cli([*args, "--resume"], msc_env(backing, record=record))
    assert second.returncode == 0, second.stderr
    assert sha(unpacked(out)) == sha(backing.read_bytes())
    commands = recorded(record)
    second_run = commands[[i for i, c in enumerate(commands) if c["name"] == "INQUIRY"][1]:]
    again = sum(c["count"] for c in second_run if c["name"] == "READ(10)")
    assert again < 49152 // 2         # resumed: committed chunks were not read again
    assert not [c for c in commands if c["opcode"] in WRITE_CLASS]


def test_restore_through_usb_msc_with_read_back(tmp_path: Path) -> None:
    backing = disk_image(tmp_path / "phone.img")
    out = tmp_path / "phone.imgz"
    acquired = run_cli(["acquire", "usb-msc:", str(out), "--quiet"], msc_env(backing))
    assert acquired.returncode == 0, acquired.stderr
    blank = tmp_path / "new.img"
    blank.write_bytes(bytes(backing.stat().st_size))
    record = tmp_path / "restore.jsonl"
    restored = run_cli(["restore", str(out), "usb-msc:@NEWDISK", "--yes", "--quiet"],
                       msc_env(blank, serial="NEWDISK", record=record))
    assert restored.returncode == 0, restored.stderr
    assert sha(blank.read_bytes()) == sha(backing.read_bytes())
    commands = recorded(record)
    written = {c["lba"] for c in commands if c["name"] == "WRITE(10)"}
    read_back = {c["lba"] for c in commands if c["name"] == "READ(10)"}
    assert written and written <= read_back           # every written range was read back
    assert any(c["name"] == "SYNCHRONIZE CACHE(10)" for c in commands)


def test_devices_lists_known_usb_modes(bus: EmuBackend, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    bus.attach(MscDisk(disk_image(tmp_path / "a.img", 1 << 20), serial="DISK1",
                       port_numbers=(3, 1)))
    bulk = (EndpointDesc(0x81), EndpointDesc(0x01))
    bus.attach(EmulatedDevice(0x05C6, 0x9008, (InterfaceDesc(0, 0xFF, 0xFF, 0xFF, bulk),),
                              serial="", port_numbers=(4,)))
    bus.attach(EmulatedDevice(0x18D1, 0x4EE0, (InterfaceDesc(0, 0xFF, 0x42, 0x03, bulk),),
                              serial="FB123", product="Pixel"))
    bus.attach(EmulatedDevice(0x046D, 0xC52B, (InterfaceDesc(0, 0x03, 0x01, 0x02, ()),),
                              serial="MOUSE"))
    assert main(["devices", "--json"]) == 0
    usb = json.loads(capsys.readouterr().out)["usb"]
    assert [(d["vid"], d["pid"], d["sources"]) for d in usb] == [
        ("0781", "5581", ["usb-msc:@DISK1"]),
        ("05c6", "9008", ["edl:1-4"]),
        ("18d1", "4ee0", ["fastboot:@FB123"])]
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "SOURCE: usb-msc:@DISK1" in text and "SOURCE: edl:1-4" in text
    assert "MOUSE" not in text and "046d" not in text


def test_devices_lists_block_devices(tmp_path: Path, loop: object,
                                     capsys: pytest.CaptureFixture) -> None:
    backing = tmp_path / "card.img"
    backing.write_bytes(bytes(3 << 20))
    with loop(backing) as dev:
        assert main(["devices", "--json"]) == 0
        block = json.loads(capsys.readouterr().out)["block"]
        mine = [d for d in block if d["source"] == dev]
    assert len(mine) == 1
    assert (mine[0]["size_bytes"], mine[0]["sector_size"], mine[0]["mounted"]) == \
        (3 << 20, 512, [])
    assert mine[0]["backing_file"].endswith("card.img")


def test_acquire_verify_rescue_send_no_write_command(tmp_path: Path) -> None:
    need_tool("ddrescuelog")
    backing = disk_image(tmp_path / "phone.img")
    record = tmp_path / "commands.jsonl"
    env = msc_env(backing, record=record, faults={"medium_errors": [5000, 5001, 9999]})
    out = tmp_path / "phone.imgz"
    assert run_cli(["acquire", "usb-msc:", str(out), "--quiet"], env).returncode == 0
    verified = run_cli(["verify", str(out), "--against", "usb-msc:", "--quiet"], env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    mapfile = tmp_path / "rescue.map"
    rescued = run_cli(["rescue", "usb-msc:", str(tmp_path / "rescue.raw"), "--mapfile",
                       str(mapfile), "--no-progress"], env)
    assert rescued.returncode == 0, rescued.stderr
    bad = subprocess.run(["ddrescuelog", "-b", "512", "-l-", str(mapfile)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert bad == ["5000", "5001", "9999"]
    commands = recorded(record)
    assert len([c for c in commands if c["name"] == "INQUIRY"]) == 3   # all three ran
    assert {c["opcode"] for c in commands} <= READ_ONLY_OPCODES
    assert not [c for c in commands if c["opcode"] in WRITE_CLASS]


@pytest.mark.parametrize("faults,code,message", [
    ({"faults": [{"kind": "bad_signature", "times": -1}]}, 1, "CSW signature"),
    ({"faults": [{"kind": "residue_overflow", "opcode": 0x28, "times": -1}]}, 1,
     "residue"),
    ({"capacity10": [0, 0]}, 2, "block length 0"),
    ({"capacity10": [4294967295, 512], "capacity16": [1 << 60, 4096]}, 2, "absurd"),
])
def test_hostile_device_gives_a_clean_cli_error(tmp_path: Path, faults: dict, code: int,
                                               message: str) -> None:
    backing = disk_image(tmp_path / "phone.img", 1 << 20)
    result = run_cli(["acquire", "usb-msc:", str(tmp_path / "x.imgz"), "--quiet"],
                     msc_env(backing, faults=faults))
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
