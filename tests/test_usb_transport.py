"""The USB transport: locators, backend injection, claiming, and pyusb errors -> our tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.usbemu import EmuBackend, EmulatedDevice, EndpointDesc, InterfaceDesc, NoResponse
from fixtures.usbemu.device import STALL
from imager.devices.usb import transport
from imager.devices.usb.transport import Locator, UsbTransport, parse_locator
from imager.errors import (
    DeviceError,
    DeviceGone,
    TransportStall,
    TransportTimeout,
    UsageError,
)

TRIPLE = (0xFF, 0x42, 0x03)


class Echo(EmulatedDevice):
    """Answers each bulk OUT with the same bytes on bulk IN; b"stall" stalls IN instead."""

    def __init__(self, serial: str = "ECHO1", **kwargs: object) -> None:
        bulk = (EndpointDesc(0x81), EndpointDesc(0x01))
        super().__init__(0x18D1, 0x4EE0, (InterfaceDesc(0, *TRIPLE, bulk),), serial=serial,
                         kernel_driver=True, **kwargs)

    def on_bulk_out(self, ep: int, data: bytes) -> None:
        if data == b"busy":
            raise NoResponse("NAK")
        self.queue_in(0x81, STALL if data == b"stall" else data)


@pytest.mark.parametrize("text,expected", [
    ("", Locator()),
    ("05c6:9008", Locator(0x05C6, 0x9008)),
    ("@ABC-123", Locator(serial="ABC-123")),
    ("18D1:4EE0@x", Locator(0x18D1, 0x4EE0, "x")),
    ("1-2.3", Locator(bus=1, ports=(2, 3))),
    ("3-10", Locator(bus=3, ports=(10,))),
])
def test_parse_locator(text: str, expected: Locator) -> None:
    assert parse_locator(text) == expected


@pytest.mark.parametrize("text", ["05c6", "05c6:90", "1-", "1-2@x", "@", "sda", "1.2"])
def test_parse_locator_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_locator(text)


def test_transfers_and_error_mapping(bus: EmuBackend) -> None:
    dev = bus.attach(Echo())
    t = UsbTransport.open(Locator(serial="ECHO1"), TRIPLE, "echo", timeout_ms=250)
    assert (t.ep_in, t.ep_out, t.max_packet) == (0x81, 0x01, 512)
    assert t.info["serial_number"] == "ECHO1"
    assert t.write(b"hello") == 5 and t.read(64) == b"hello"
    with pytest.raises(TransportTimeout) as info:
        t.read(64)
    assert (info.value.endpoint, info.value.ms) == (0x81, 250) and "250 ms" in str(info.value)
    with pytest.raises(TransportTimeout):
        t.write(b"busy", timeout_ms=40)
    t.write(b"stall")
    with pytest.raises(TransportStall) as stalled:
        t.read(64)
    assert stalled.value.endpoint == 0x81
    with pytest.raises(TransportStall):             # stays halted until cleared
        t.read(64)
    t.clear_halt(0x81)
    t.write(b"again")
    assert t.read(64) == b"again"
    assert all(x.timeout_ms in (250, 40) for x in dev.transfers if x.kind.startswith("bulk"))
    dev.disconnect()
    with pytest.raises(DeviceGone):
        t.read(64)
    t.close()
    t.close()


def test_claim_detaches_and_close_gives_the_driver_back(bus: EmuBackend) -> None:
    dev = bus.attach(Echo())
    t = UsbTransport.open(Locator(), TRIPLE, "echo")
    assert dev.detached == {0}
    with pytest.raises(DeviceError, match="busy"):   # a second program cannot claim it
        UsbTransport.open(Locator(), TRIPLE, "echo")
    t.close()
    assert dev.detached == set()


def test_choice_between_several_devices(bus: EmuBackend) -> None:
    bus.attach(Echo("ONE", port_numbers=(1,)))
    bus.attach(Echo("TWO", port_numbers=(2, 7)))
    with pytest.raises(UsageError, match="2 echos match"):
        UsbTransport.open(Locator(), TRIPLE, "echo")
    for loc, serial in ((Locator(serial="TWO"), "TWO"), (Locator(bus=1, ports=(2, 7)), "TWO"),
                        (Locator(bus=1, ports=(1,)), "ONE")):
        t = UsbTransport.open(loc, TRIPLE, "echo")
        assert t.info["serial_number"] == serial
        t.close()
    with pytest.raises(DeviceError, match="no echo found"):
        UsbTransport.open(Locator(0x1234, 0x5678), TRIPLE, "echo")


def test_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fixtures.usbemu.scenarios import msc_env, msc_from_env

    image = tmp_path / "d.img"
    image.write_bytes(bytes(64 << 10))
    for name, value in msc_env(image, serial="ENVDISK").items():
        monkeypatch.setenv(name, value)
    assert transport.get_backend() is msc_from_env()   # one bus per process and config
    infos = transport.list_devices()
    assert [(i.serial, i.sources()) for i in infos] == [("ENVDISK", ["usb-msc:@ENVDISK"])]
    monkeypatch.setenv("IMAGER_USB_BACKEND", "no-colon")
    with pytest.raises(UsageError, match="module:callable"):
        transport.get_backend()


def test_default_backend_is_libusb_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGER_USB_BACKEND", raising=False)
    backend = transport.get_backend()
    assert type(backend).__module__ == "usb.backend.libusb1"
