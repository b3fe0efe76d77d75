"""``usb-msc:`` Source and Target through the real pyusb stack on the emulated bus.

Expected bytes come from the emulator's backing file (read directly, never through imager), and
the command record of the emulated device shows what actually crossed the wire.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.usbemu import WRITE_CLASS, EmuBackend, Fault, MscDisk
from formats.extent import Extent, Kind
from imager.devices import open_source, open_target
from imager.devices.usb.bot import BotLink
from imager.errors import (
    BadInput,
    DeviceError,
    DeviceGone,
    OutOfBounds,
    ProtocolError,
    ReadError,
    TargetRefused,
    UsageError,
    WriteError,
)
from tests.contract import check_source, check_target

READ_ONLY_OPCODES = {0x00, 0x03, 0x12, 0x1A, 0x25, 0x28, 0x88, 0x9E}


def make_image(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def plug(bus: EmuBackend, path: Path, **kwargs: object) -> MscDisk:
    return bus.attach(MscDisk(path, **kwargs))


def no_unbounded_transfers(disk: MscDisk) -> None:
    """Every bulk and control transfer carried a finite timeout."""
    assert all(t.timeout_ms > 0 for t in disk.transfers if t.kind != "clear_halt"
               and t.kind != "reset")


@pytest.mark.parametrize("block", [512, 4096])
def test_source_passes_the_contract(bus: EmuBackend, tmp_path: Path, block: int) -> None:
    image = make_image(tmp_path / "disk.img", 2 << 20)
    disk = plug(bus, image, block_size=block, serial="CONTRACT1")
    with open_source("usb-msc:@CONTRACT1") as source:
        assert source.sector_size == block
        check_source(source, image.read_bytes())
        ident = source.identity
        assert (ident.kind, ident.serial, ident.model) == \
            ("usb-msc", "CONTRACT1", "IMAGER EMULATED DISK")
    assert disk.opcodes() <= READ_ONLY_OPCODES
    assert disk.write_commands() == []
    no_unbounded_transfers(disk)


@pytest.mark.parametrize("block", [512, 4096])
def test_target_passes_the_contract(bus: EmuBackend, tmp_path: Path, block: int) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image, block_size=block)
    check_target(lambda: open_target("usb-msc:"), image.read_bytes)
    assert {c.name for c in disk.write_commands()} == {"WRITE(10)"}
    assert any(c.name == "SYNCHRONIZE CACHE(10)" for c in disk.commands)


def test_addressing_by_ids_serial_and_port(bus: EmuBackend, tmp_path: Path) -> None:
    a = plug(bus, make_image(tmp_path / "a.img", 64 << 10), serial="AAA", port_numbers=(2, 3))
    plug(bus, make_image(tmp_path / "b.img", 128 << 10), serial="BBB", pid=0x1111,
         port_numbers=(4,))
    for spec, size in (("usb-msc:@AAA", 64 << 10), ("usb-msc:0781:1111", 128 << 10),
                       ("usb-msc:1-2.3", 64 << 10), ("usb-msc:0781:5581@AAA", 64 << 10)):
        with open_source(spec) as source:
            assert source.identity.size_bytes == size, spec
    assert a.address != 0
    with pytest.raises(UsageError, match="2 USB mass-storage devices match"):
        open_source("usb-msc:")
    with pytest.raises(DeviceError, match="no USB mass-storage device found"):
        open_source("usb-msc:@NOPE")
    with pytest.raises(UsageError, match="names no USB device"):
        open_source("usb-msc:garbage")


def test_beyond_2tib_uses_16_byte_commands(bus: EmuBackend, tmp_path: Path) -> None:
    blocks = (1 << 32) + 2048                         # a sparse file just past 2 TiB
    image = tmp_path / "big.img"
    with image.open("wb") as f:
        f.truncate(blocks * 512)
        f.seek((blocks - 3) * 512)
        f.write(b"\xee" * 512 + b"\x77" * 1024)
    disk = plug(bus, image)
    with open_source("usb-msc:") as source:
        assert source.sector_count == blocks
        assert source.read(blocks - 3, 3) == b"\xee" * 512 + b"\x77" * 1024
        assert source.read(5, 1) == bytes(512)
    names = [c.name for c in disk.commands]
    assert "READ CAPACITY(16)" in names                # (10) said 0xFFFFFFFF
    reads = [(c.name, c.lba) for c in disk.commands if c.name.startswith("READ(")]
    assert reads == [("READ(16)", blocks - 3), ("READ(10)", 5)]


def test_transfers_are_one_mib_per_command(bus: EmuBackend, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 3 << 20)
    disk = plug(bus, image)
    with open_source("usb-msc:") as source:
        assert source.read(0, source.sector_count) == image.read_bytes()
    counts = [c.count for c in disk.commands if c.name == "READ(10)"]
    assert counts == [2048, 2048, 2048]


def test_medium_errors_name_the_failed_lbas(bus: EmuBackend, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image)
    disk.disk.medium_errors.update({100, 101, 102, 700})
    with open_source("usb-msc:") as source:
        with pytest.raises(ReadError) as info:
            source.read(64, 64)
        assert (info.value.lba, info.value.count) == (100, 28)
        with pytest.raises(ReadError) as info:
            source.read(700, 1)
        assert (info.value.lba, info.value.count) == (700, 1)
        assert source.read(103, 597) == image.read_bytes()[103 * 512:700 * 512]
        from imager.salvage import salvage_read

        data, unread = salvage_read(source, 0, 1024, retries=0)
    assert unread == [Extent(100, 3, Kind.UNREAD), Extent(700, 1, Kind.UNREAD)]
    expected = bytearray(image.read_bytes()[:1024 * 512])
    for lba in (100, 101, 102, 700):
        expected[lba * 512:(lba + 1) * 512] = bytes(512)
    assert data == bytes(expected)
    assert disk.write_commands() == []


@pytest.mark.parametrize("kind", ["stall_data", "stall_csw", "phase", "timeout", "stall_cbw",
                                  "zlp_csw", "bad_tag", "bad_signature", "short_csw",
                                  "residue_overflow", "extra_data"])
def test_one_off_faults_are_recovered(bus: EmuBackend, tmp_path: Path, kind: str) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image, faults=[Fault(kind, lba=300)])
    with open_source("usb-msc:") as source:
        assert source.read(256, 256) == image.read_bytes()[256 * 512:512 * 512]
    assert disk.faults[0].fired == 1
    reads = [c for c in disk.commands if c.name == "READ(10)"]
    assert len(reads) == (1 if kind in ("stall_csw", "zlp_csw") else 2)   # retried once
    needs_reset = kind not in ("stall_data", "stall_csw", "zlp_csw")
    assert disk.resets == (1 if needs_reset else 0)
    no_unbounded_transfers(disk)


@pytest.mark.parametrize("kind,message", [
    ("bad_tag", "CSW tag"), ("bad_signature", "CSW signature"), ("short_csw", "CSW is 12 bytes"),
    ("residue_overflow", "residue 528384 is larger than the 524288 bytes"),
    ("phase", "phase error"), ("timeout", "no answer"), ("extra_data", "sent more than requested")])
def test_hostile_devices_give_clean_errors(bus: EmuBackend, tmp_path: Path, kind: str,
                                          message: str) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image, faults=[Fault(kind, lba=0, times=-1)])
    with open_source("usb-msc:", retries=2) as source:
        with pytest.raises(DeviceError, match=message) as info:
            source.read(0, 1024)
        if kind != "timeout":
            assert isinstance(info.value, ProtocolError)
        assert source.read(1024, 1) == image.read_bytes()[1024 * 512:1025 * 512]
    assert disk.faults[0].fired == 3                  # first try + 2 retries, then gave up
    no_unbounded_transfers(disk)


@pytest.mark.parametrize("capacity,message", [
    ((0, 0), "block length 0"), ((1000, 520), "block length 520"),
    ((0xFFFFFFFE, 1 << 16), None), ((0xFFFFFFFF, 512), "absurd")])
def test_hostile_capacity_is_refused(bus: EmuBackend, tmp_path: Path, capacity: tuple,
                                     message: str | None) -> None:
    disk = plug(bus, make_image(tmp_path / "disk.img", 64 << 10))
    disk.disk.capacity10 = capacity
    disk.disk.capacity16 = ((1 << 64) - 1, 512)
    if message is None:                               # 2^32 blocks of 64 KiB = 256 TiB: fine
        with open_source("usb-msc:") as source:
            assert source.identity.size_bytes == (1 << 32) * 65536 - 65536
        return
    with pytest.raises(BadInput, match=message):
        open_source("usb-msc:")


def test_disconnect_is_device_gone_and_reopen_after_replug(bus: EmuBackend,
                                                           tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image, faults=[Fault("disconnect", lba=512)])
    source = open_source("usb-msc:")
    assert source.read(0, 512) == image.read_bytes()[:512 * 512]
    with pytest.raises(DeviceGone):
        source.read(512, 512)
    source.close()
    with pytest.raises(DeviceError, match="no USB mass-storage device found"):
        open_source("usb-msc:")
    disk.reconnect()                                  # comes back with a unit attention
    with open_source("usb-msc:") as again:
        assert again.read(512, 512) == image.read_bytes()[512 * 512:1024 * 512]


def test_a_source_cannot_send_write_commands(bus: EmuBackend, tmp_path: Path) -> None:
    disk = plug(bus, make_image(tmp_path / "disk.img", 64 << 10))
    with open_source("usb-msc:") as source:
        assert not hasattr(source, "write") and not hasattr(source, "_write")
        link: BotLink = source.scsi.link
        for opcode in sorted(WRITE_CLASS):
            with pytest.raises(PermissionError):
                link.command(bytes([opcode]) + bytes(9), data_out=bytes(512))
    assert disk.write_commands() == []


def test_target_write_errors_and_write_protect(bus: EmuBackend, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 64 << 10)
    disk = plug(bus, image)
    disk.disk.write_errors.add(9)
    with open_target("usb-msc:") as target:
        with pytest.raises(WriteError) as info:
            target.write(8, bytes(1024))
        assert info.value.lba == 8 and "3/0C/00" in str(info.value)
        with pytest.raises(OutOfBounds):
            target.write(target.sector_count, bytes(512))
    assert image.read_bytes()[8 * 512:9 * 512] == bytes(512)   # the good block landed
    protected = plug(bus, make_image(tmp_path / "ro.img", 64 << 10), serial="RO",
                     read_only=True)
    with pytest.raises(TargetRefused, match="write-protected"):
        open_target("usb-msc:@RO")
    assert protected.write_commands() == []


def test_sector_size_mismatch_and_bad_lun(bus: EmuBackend, tmp_path: Path) -> None:
    plug(bus, make_image(tmp_path / "disk.img", 64 << 10), block_size=4096)
    with pytest.raises(BadInput, match="4096"):
        open_source("usb-msc:", sector_size=512)
    with pytest.raises(UsageError, match="LUN 3"):
        open_source("usb-msc:", lun=3)


def test_port_reset_when_the_class_reset_fails(bus: EmuBackend, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    disk = plug(bus, image, faults=[Fault("phase", lba=300)], bot_reset_stalls=True,
                max_lun_stalls=True)
    with open_source("usb-msc:") as source:
        assert source.read(256, 256) == image.read_bytes()[256 * 512:512 * 512]
    assert [t.kind for t in disk.transfers].count("reset") == 1
    names = [c.name for c in disk.commands]
    # after the port reset the device reports a unit attention, which is retried
    assert names[-4:] == ["READ(10)", "READ(10)", "REQUEST SENSE", "READ(10)"]


def fake_kernel(root: Path, monkeypatch: pytest.MonkeyPatch, mounted: bool) -> None:
    """sysfs + mountinfo as Linux lays them out for usb-storage disk sdz on port 1-2.3."""
    from imager.devices.usb import kernel

    scsi = root / "usb/1-2.3:1.0/host7/target7:0:0/7:0:0:0/block/sdz"
    scsi.mkdir(parents=True)
    (root / "block/sdz/sdz1").mkdir(parents=True)
    (root / "block/sdz/dev").write_text("8:240\n")
    (root / "block/sdz/sdz1/dev").write_text("8:241\n")
    (root / "block/sdz/sdz1/partition").write_text("1\n")
    line = "36 25 8:241 / /media/user/PHONE rw,nosuid - vfat /dev/sdz1 rw\n"
    (root / "mountinfo").write_text(line if mounted else "")
    monkeypatch.setattr(kernel, "SYS_USB", root / "usb")
    monkeypatch.setattr(kernel, "SYS_BLOCK", root / "block")
    monkeypatch.setattr(kernel, "MOUNTINFO", root / "mountinfo")


def test_a_disk_mounted_through_usb_storage_is_refused(bus: EmuBackend, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    disk = plug(bus, make_image(tmp_path / "disk.img", 64 << 10), port_numbers=(2, 3))
    fake_kernel(tmp_path / "sys", monkeypatch, mounted=True)
    for opener in (open_source, open_target):
        with pytest.raises(TargetRefused, match="/dev/sdz, mounted at /media/user/PHONE"):
            opener("usb-msc:")
    assert disk.detached == set() and disk.commands == []   # nothing was touched


def test_driver_stays_detached_after_reading_and_returns_after_writing(
        bus: EmuBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = plug(bus, make_image(tmp_path / "disk.img", 64 << 10), port_numbers=(2, 3))
    fake_kernel(tmp_path / "sys", monkeypatch, mounted=False)
    open_source("usb-msc:").close()
    assert disk.detached == {0}          # no automount of evidence after an acquisition
    disk.reconnect()                     # re-plugged: usb-storage has it again
    target = open_target("usb-msc:")
    assert disk.detached == {0}
    target.close()
    assert disk.detached == set()
