"""The USB emulator itself, driven through the real pyusb stack with hand-built BOT packets.

Expected values come from specs/usb-mass-storage.md (CBW/CSW layouts, class requests, stall
rules) and from libusb's error conventions (EPIPE, ETIMEDOUT, ENODEV, EBUSY); none of imager's
own USB code is used here.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
import usb.core
import usb.util

from fixtures.usbemu import EmuBackend, Fault, MscDisk, WouldHang

EP_IN, EP_OUT = 0x81, 0x02


def cbw(tag: int, length: int, data_in: bool, cdb: bytes, lun: int = 0) -> bytes:
    return struct.pack("<IIIBBB16s", 0x43425355, tag, length, 0x80 if data_in else 0, lun,
                       len(cdb), cdb)


def csw(raw: bytes) -> tuple[int, int, int, int]:
    assert len(raw) == 13
    return struct.unpack("<IIIB", raw)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(256 * 512))
    return path


def opened(disk: MscDisk) -> usb.core.Device:
    dev = usb.core.find(backend=EmuBackend([disk]), idVendor=disk.vid, idProduct=disk.pid)
    assert dev is not None
    if dev.is_kernel_driver_active(0):
        dev.detach_kernel_driver(0)
    usb.util.claim_interface(dev, 0)
    return dev


def test_descriptors_and_strings_through_pyusb(image: Path) -> None:
    disk = MscDisk(image, serial="SN-42", vid=0x1234, pid=0x5678)
    dev = usb.core.find(backend=EmuBackend([disk]), idVendor=0x1234)
    assert (dev.idVendor, dev.idProduct) == (0x1234, 0x5678)
    intf = dev.get_active_configuration()[(0, 0)]
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == \
        (0x08, 0x06, 0x50)
    eps = {e.bEndpointAddress: usb.util.endpoint_type(e.bmAttributes) for e in intf}
    assert eps == {EP_IN: usb.util.ENDPOINT_TYPE_BULK, EP_OUT: usb.util.ENDPOINT_TYPE_BULK}
    assert dev.serial_number == "SN-42"          # GET_DESCRIPTOR(STRING) over ep0
    assert dev.manufacturer and dev.product
    raw = dev.ctrl_transfer(0x80, 6, 0x0300, 0, 255)  # string 0: the LANGID list
    assert bytes(raw) == b"\x04\x03\x09\x04"
    assert "SN-42" in str(dev)                           # pyusb's full descriptor dump


def test_kernel_driver_must_be_detached_before_claim(image: Path) -> None:
    dev = usb.core.find(backend=EmuBackend([MscDisk(image)]))
    assert dev.is_kernel_driver_active(0)
    with pytest.raises(usb.core.USBError) as info:
        usb.util.claim_interface(dev, 0)
    assert info.value.errno == errno.EBUSY
    dev.detach_kernel_driver(0)
    usb.util.claim_interface(dev, 0)
    assert not dev.is_kernel_driver_active(0)


def test_inquiry_read_and_csw_per_spec(image: Path) -> None:
    disk = MscDisk(image)
    dev = opened(disk)
    assert dev.ctrl_transfer(0xA1, 0xFE, 0, 0, 1).tobytes() == b"\x00"   # Get Max LUN
    dev.write(EP_OUT, cbw(7, 36, True, struct.pack(">BBBHB", 0x12, 0, 0, 36, 0)), 100)
    inquiry = dev.read(EP_IN, 36, 100).tobytes()
    assert inquiry[8:16] == b"IMAGER  " and len(inquiry) == 36
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 7, 0, 0)
    dev.write(EP_OUT, cbw(8, 4 * 512, True, struct.pack(">BBIBHB", 0x28, 0, 10, 0, 4, 0)), 100)
    assert dev.read(EP_IN, 4 * 512, 100).tobytes() == image.read_bytes()[10 * 512:14 * 512]
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 8, 0, 0)
    assert [(c.name, c.lba, c.count) for c in disk.commands] == \
        [("INQUIRY", None, None), ("READ(10)", 10, 4)]


def test_short_data_stalls_bulk_in_and_csw_reports_residue(image: Path) -> None:
    dev = opened(MscDisk(image))
    dev.write(EP_OUT, cbw(1, 64, True, struct.pack(">BBBHB", 0x12, 0, 0, 36, 0)), 100)
    assert len(dev.read(EP_IN, 64, 100)) == 36          # short packet ends the transfer
    with pytest.raises(usb.core.USBError) as info:      # then the device halts bulk IN
        dev.read(EP_IN, 13, 100)
    assert info.value.errno == errno.EPIPE
    dev.clear_halt(EP_IN)
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 1, 64 - 36, 0)


def test_invalid_cbw_halts_both_pipes_until_reset_recovery(image: Path) -> None:
    dev = opened(MscDisk(image))
    dev.write(EP_OUT, b"USBC" + bytes(20), 100)          # 24 bytes: not a valid CBW
    dev.clear_halt(EP_IN)                               # clearing alone is not enough
    for ep, op in ((EP_IN, lambda: dev.read(EP_IN, 13, 100)),
                   (EP_OUT, lambda: dev.write(EP_OUT, cbw(2, 0, False, bytes(6)), 100))):
        with pytest.raises(usb.core.USBError) as info:
            op()
        assert info.value.errno == errno.EPIPE, hex(ep)
    dev.ctrl_transfer(0x21, 0xFF, 0, 0, None)           # Bulk-Only Mass Storage Reset
    dev.clear_halt(EP_IN)
    dev.clear_halt(EP_OUT)
    dev.write(EP_OUT, cbw(3, 0, False, bytes(6)), 100)   # TEST UNIT READY
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 3, 0, 0)


def test_medium_error_check_condition_and_sense(image: Path) -> None:
    disk = MscDisk(image)
    disk.disk.medium_errors.add(12)
    dev = opened(disk)
    dev.write(EP_OUT, cbw(4, 8 * 512, True, struct.pack(">BBIBHB", 0x28, 0, 8, 0, 8, 0)), 100)
    with pytest.raises(usb.core.USBError) as info:      # 4 good blocks then STALL: libusb
        dev.read(EP_IN, 8 * 512, 100)                   # reports the pipe error
    assert info.value.errno == errno.EPIPE
    dev.clear_halt(EP_IN)
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 4, 4 * 512, 1)
    dev.write(EP_OUT, cbw(5, 18, True, bytes([0x03, 0, 0, 0, 18, 0])), 100)
    sense = dev.read(EP_IN, 18, 100).tobytes()
    assert sense[0] == 0xF0 and sense[2] & 0xF == 3 and (sense[12], sense[13]) == (0x11, 0)
    assert struct.unpack_from(">I", sense, 3)[0] == 12   # INFORMATION = failing LBA


def test_host_expects_no_data_but_device_sends_is_a_phase_error(image: Path) -> None:
    dev = opened(MscDisk(image))
    dev.write(EP_OUT, cbw(9, 0, False, struct.pack(">BBBHB", 0x12, 0, 0, 36, 0)), 100)
    assert csw(dev.read(EP_IN, 13, 100).tobytes())[3] == 2


def test_timeouts_and_missing_timeouts(image: Path) -> None:
    dev = opened(MscDisk(image))
    with pytest.raises(usb.core.USBTimeoutError) as info:
        dev.read(EP_IN, 13, 50)                         # nothing to send
    assert info.value.errno == errno.ETIMEDOUT
    with pytest.raises(WouldHang):                      # 0 = wait forever in libusb
        dev.read(EP_IN, 13, 0)


def test_disconnect_gives_enodev_and_reconnect_is_a_new_device(image: Path) -> None:
    disk = MscDisk(image, faults=[Fault("disconnect", opcode=0x00)])
    backend = EmuBackend([disk])
    dev = usb.core.find(backend=backend)
    dev.detach_kernel_driver(0)
    with pytest.raises(usb.core.USBError) as info:
        dev.write(EP_OUT, cbw(1, 0, False, bytes(6)), 100)
    assert info.value.errno == errno.ENODEV
    assert usb.core.find(backend=backend) is None
    disk.reconnect()
    with pytest.raises(usb.core.USBError) as info:      # the old handle stays dead
        dev.read(EP_IN, 13, 100)
    assert info.value.errno == errno.ENODEV
    fresh = opened(disk)
    fresh.write(EP_OUT, cbw(2, 0, False, bytes(6)), 100)
    assert csw(fresh.read(EP_IN, 13, 100).tobytes())[3] == 1      # unit attention first
    fresh.write(EP_OUT, cbw(3, 18, True, bytes([0x03, 0, 0, 0, 18, 0])), 100)
    sense = fresh.read(EP_IN, 18, 100).tobytes()
    assert (sense[2] & 0xF, sense[12]) == (6, 0x29)     # power on / reset occurred


def test_write_lands_in_the_backing_file(image: Path) -> None:
    disk = MscDisk(image)
    dev = opened(disk)
    payload = bytes(range(256)) * 4
    dev.write(EP_OUT, cbw(1, 1024, False, struct.pack(">BBIBHB", 0x2A, 0, 3, 0, 2, 0)), 100)
    dev.write(EP_OUT, payload, 100)
    assert csw(dev.read(EP_IN, 13, 100).tobytes()) == (0x53425355, 1, 0, 0)
    assert image.read_bytes()[3 * 512:5 * 512] == payload
    assert [c.name for c in disk.write_commands()] == ["WRITE(10)"]
