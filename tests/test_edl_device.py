"""The ``edl:`` Source and Target: contract suite, restore through Firehose program, payload
negotiation, Sahara details, ``imager devices``.

Oracles: the emulated phone's backing files and its record of commands and transfer sizes.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from fixtures.usbemu import EmuBackend
from fixtures.usbemu.edl import EdlPhone
from imager.cli import main
from imager.devices import open_source, open_target
from imager.devices.usb import sahara
from imager.errors import ProtocolError, UsageError
from imager.phoneset import load_set
from tests.contract import check_source, check_target
from tests.edl_support import sha


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGER_STATE_DIR", str(tmp_path / "state"))


def test_source_contract(bus: EmuBackend, ufs: list[Path], loader: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader, serial="SER123"))
    source = open_source("edl:@SER123,lun=3", loader=str(loader))
    try:
        check_source(source, ufs[3].read_bytes())
        assert source.identity.kind == "edl" and source.identity.serial == "SER123"
        assert source.identity.extra["lun"] == 3
    finally:
        source.close()
    assert phone.commands_named("program", "erase") == []


def test_target_contract(bus: EmuBackend, ufs: list[Path], loader: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader))
    check_target(lambda: open_target("edl:", loader=str(loader), lun=1),
                 lambda: ufs[1].read_bytes())
    assert phone.commands_named("program")


def test_restore_set_rewrites_the_luns(bus: EmuBackend, ufs: list[Path], loader: Path,
                                       tmp_path: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader))
    assert main(["acquire", "edl:", str(tmp_path / "p"), "--loader", str(loader),
                 "--quiet"]) == 0
    originals = [p.read_bytes() for p in ufs]
    for path in (ufs[0], ufs[4]):                # the phone's storage changes afterwards
        path.write_bytes(os.urandom(path.stat().st_size))
    assert main(["restore", str(tmp_path / "p.imgset.json"), "edl:", "--loader", str(loader),
                 "--yes", "--quiet"]) == 0
    assert [sha(p.read_bytes()) for p in ufs] == [sha(d) for d in originals]
    assert phone.commands_named("erase") == []
    assert max(phone.firehose.program_sizes) <= phone.firehose.payload


def test_restore_one_lun_image_goes_to_its_lun(bus: EmuBackend, ufs: list[Path], loader: Path,
                                               tmp_path: Path) -> None:
    bus.attach(EdlPhone(ufs, loader=loader))
    assert main(["acquire", "edl:", str(tmp_path / "p"), "--lun", "2", "--loader",
                 str(loader), "--quiet"]) == 0
    original = ufs[2].read_bytes()
    ufs[2].write_bytes(bytes(len(original)))
    others = [sha(p.read_bytes()) for i, p in enumerate(ufs) if i != 2]
    assert main(["restore", str(tmp_path / "p.lun2.imgz"), "edl:", "--loader", str(loader),
                 "--yes", "--quiet"]) == 0
    assert ufs[2].read_bytes() == original
    assert [sha(p.read_bytes()) for i, p in enumerate(ufs) if i != 2] == others
    pset = load_set(str(tmp_path / "p.imgset.json"))
    assert [e.status for e in pset.luns].count("complete") == 1


def test_payload_negotiation_bounds_every_program_write(bus: EmuBackend, ufs: list[Path],
                                                        loader: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader, max_payload=64 << 10,
                                nak_big_payload=True))
    target = open_target("edl:", loader=str(loader), lun=0)
    try:
        data = os.urandom(300 << 10)            # 75 sectors: four full payloads + a tail
        target.write(100, data)
    finally:
        target.close()
    assert ufs[0].read_bytes()[100 * 4096:100 * 4096 + len(data)] == data
    sizes = [c["MaxPayloadSizeToTargetInBytes"] for c in phone.commands_named("configure")]
    assert sizes == [str(1 << 20), str(64 << 10)]     # NAK proposing 64 KiB, then resent
    assert phone.firehose.program_sizes and max(phone.firehose.program_sizes) == 64 << 10


def test_sahara_answers_exactly_the_requested_pieces(bus: EmuBackend, ufs: list[Path],
                                                     loader: Path) -> None:
    phone = bus.attach(EdlPhone(ufs[:1], loader=loader, piece=10_000, read64=True))
    source = open_source("edl:", loader=str(loader))
    source.close()
    pieces = [n for kind, n in phone.sahara_log if kind == "data"]
    size = loader.stat().st_size
    assert pieces[0] == 0x34 and sum(pieces) == size and phone.uploads == 1
    assert pieces[1] == (size - 0x34) % 10_000   # the last piece was asked first


def test_malformed_sahara_packet_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        sahara.parse_packet(struct.pack("<III", 3, 0x20, 0))      # length lies
    with pytest.raises(ProtocolError):
        sahara.parse_packet(b"\x01\x00")


def test_edl_needs_a_loader_and_an_existing_lun(bus: EmuBackend, ufs: list[Path],
                                                loader: Path) -> None:
    bus.attach(EdlPhone(ufs, loader=loader))
    with pytest.raises(UsageError, match="--loader"):
        open_source("edl:")
    with pytest.raises(UsageError, match="LUN 9"):
        open_source("edl:,lun=9", loader=str(loader))


def test_devices_lists_edl_and_fastboot(bus: EmuBackend, ufs: list[Path], loader: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    from fixtures.usbemu.fastboot import FastbootPhone

    bus.attach(EdlPhone(ufs[:1], loader=loader, serial="EDLSER"))
    bus.attach(FastbootPhone({"boot_a": ufs[1]}, serial="FBSER"))
    assert main(["devices", "--json"]) == 0
    usb = json.loads(capsys.readouterr().out)["usb"]
    assert {tuple(d["sources"]) for d in usb} == {("edl:@EDLSER",), ("fastboot:@FBSER",)}
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "edl:@EDLSER" in text and "--loader" in text
    assert "fastboot:@FBSER" in text and "--partition" in text


def test_restore_set_partition_goes_to_the_lun_that_has_it(bus: EmuBackend, ufs: list[Path],
                                                           loader: Path, tmp_path: Path) -> None:
    phone = bus.attach(EdlPhone(ufs, loader=loader))
    assert main(["acquire", "edl:", str(tmp_path / "p"), "--loader", str(loader),
                 "--quiet"]) == 0
    original = ufs[5].read_bytes()
    damaged = bytearray(original)
    damaged[136 * 4096:392 * 4096] = bytes(256 * 4096)   # boot_a and boot_b (sgdisk -p)
    ufs[5].write_bytes(bytes(damaged))
    others = [sha(p.read_bytes()) for p in ufs[:5]]
    phone.commands.clear()
    assert main(["restore", str(tmp_path / "p.imgset.json"), "edl:", "--loader", str(loader),
                 "--partition", "boot_b", "--yes", "--quiet"]) == 0
    after = ufs[5].read_bytes()
    assert after[264 * 4096:392 * 4096] == original[264 * 4096:392 * 4096]     # boot_b back
    assert after[136 * 4096:264 * 4096] == bytes(128 * 4096)                   # boot_a not
    assert [sha(p.read_bytes()) for p in ufs[:5]] == others
    programs = phone.commands_named("program")
    assert programs and {c["physical_partition_number"] for c in programs} == {"5"}


def test_info_reads_a_lun_table_through_edl(bus: EmuBackend, ufs: list[Path], loader: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    bus.attach(EdlPhone(ufs, loader=loader))
    assert main(["info", "edl:lun=5", "--loader", str(loader), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["sector_size"] == 4096 and table["kind"] == "gpt"
    # names and LBAs as sgdisk -p printed them on the 4K loop device (tests/edl_support.py)
    assert [(p["name"], p["first_lba"], p["last_lba"]) for p in table["partitions"]] == [
        ("modemst1", 8, 135), ("boot_a", 136, 263), ("boot_b", 264, 391)]
