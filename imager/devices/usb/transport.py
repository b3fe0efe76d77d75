"""The USB transport: the ONLY module that imports pyusb (tests/test_layering.py checks it).

It finds devices (VID:PID, @serial or bus-port), claims an interface after detaching a kernel
driver, moves bulk and control data with an explicit timeout on every transfer, and maps pyusb
errors to our tree (STYLE.md rule 4): timeouts -> TransportTimeout, STALL (EPIPE) ->
TransportStall, a vanished device (ENODEV) -> DeviceGone, the rest -> TransportError.

The pyusb backend is libusb from the ``libusb-package`` wheel (no system library needed), unless
one is injected: ``set_backend(obj)`` in-process, or ``IMAGER_USB_BACKEND=module:callable`` in
the environment (the callable returns a backend; the test emulator provides
``fixtures.usbemu.scenarios:msc_from_env``), which also reaches a CLI run in a subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import usb.core
import usb.util

from imager.errors import (
    DeviceError,
    DeviceGone,
    ProtocolError,
    TransportError,
    TransportStall,
    TransportTimeout,
    UsageError,
)

log = logging.getLogger(__name__)

ENV_BACKEND = "IMAGER_USB_BACKEND"
DEFAULT_TIMEOUT_MS = 5000
EDL_IDS = (0x05C6, 0x9008)
# interface class triples of the modes we speak
MSC_CLASS = (0x08, 0x06, 0x50)        # mass storage, SCSI transparent, bulk-only
FASTBOOT_CLASS = (0xFF, 0x42, 0x03)
GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO})

_override: object | None = None


def set_backend(backend: object | None) -> None:
    """Use ``backend`` (a pyusb backend) for every later lookup; None restores the default."""
    global _override
    _override = backend


def get_backend() -> object:
    """The pyusb backend: the injected one, IMAGER_USB_BACKEND's, or libusb-package's."""
    if _override is not None:
        return _override
    spec = os.environ.get(ENV_BACKEND)
    if spec:
        module_name, sep, name = spec.partition(":")
        if not sep:
            raise UsageError(f"{ENV_BACKEND}={spec!r}: expected module:callable")
        return getattr(importlib.import_module(module_name), name)()
    import libusb_package

    backend = libusb_package.get_libusb1_backend()
    if backend is None:
        raise DeviceError("libusb could not be loaded (is libusb-package installed?)")
    return backend


@dataclass(frozen=True)
class Locator:
    """Which device: any of vendor/product id, serial, bus + port path (sysfs "1-2.3")."""

    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    bus: int | None = None
    ports: tuple[int, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.vid is not None:
            parts.append(f"{self.vid:04x}:{self.pid:04x}")
        if self.serial is not None:
            parts.append(f"serial {self.serial}")
        if self.bus is not None:
            parts.append(f"port {self.bus}-{'.'.join(map(str, self.ports or ()))}")
        return ", ".join(parts) or "any device"


_IDS = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")
_PORT = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")


def parse_locator(text: str) -> Locator:
    """``""``, ``VID:PID``, ``@SERIAL``, ``VID:PID@SERIAL`` or bus-port ``1-2.3``.

    Raises:
        UsageError: the text is none of these.
    """
    text = text.strip()
    main, sep, serial = text.partition("@")
    if sep and not serial:
        raise UsageError(f"{text!r}: empty serial after '@'")
    ids, port = _IDS.match(main), _PORT.match(main)
    if ids:
        return Locator(int(ids[1], 16), int(ids[2], 16), serial or None)
    if port and not sep:
        return Locator(bus=int(port[1]), ports=tuple(int(p) for p in port[2].split(".")))
    if not main:
        return Locator(serial=serial or None)
    raise UsageError(f"{text!r} names no USB device: use VID:PID, @SERIAL or bus-port like 1-2.3")


@dataclass(frozen=True)
class UsbDeviceInfo:
    """A device on the bus, in the terms ``imager devices`` shows."""

    vid: int
    pid: int
    bus: int
    address: int
    ports: tuple[int, ...]
    serial: str = ""
    manufacturer: str = ""
    product: str = ""
    modes: tuple[str, ...] = ()        # "usb-msc", "edl", "fastboot"
    note: str = ""                     # e.g. why strings could not be read

    @property
    def port_path(self) -> str:
        return f"{self.bus}-{'.'.join(map(str, self.ports))}" if self.ports else f"{self.bus}"

    def locator_text(self) -> str:
        """The most stable locator: the serial when there is one, else the port."""
        return f"@{self.serial}" if self.serial else self.port_path

    def sources(self) -> list[str]:
        """The SOURCE/TARGET strings that reach this device, one per mode."""
        return [f"{mode}:{self.locator_text()}" for mode in self.modes]

    def to_dict(self) -> dict:
        return {"vid": f"{self.vid:04x}", "pid": f"{self.pid:04x}", "bus": self.bus,
                "address": self.address, "port": self.port_path, "serial": self.serial,
                "manufacturer": self.manufacturer, "product": self.product,
                "modes": list(self.modes), "sources": self.sources(), "note": self.note}


def _modes(dev: usb.core.Device) -> tuple[str, ...]:
    modes = []
    if (dev.idVendor, dev.idProduct) == EDL_IDS:
        modes.append("edl")
    for cfg in dev:
        for intf in cfg:
            triple = (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol)
            if triple == MSC_CLASS and "usb-msc" not in modes:
                modes.append("usb-msc")
            if triple == FASTBOOT_CLASS and "fastboot" not in modes:
                modes.append("fastboot")
    return tuple(modes)


STRING_NAMES = ("serial_number", "manufacturer", "product")


def _strings(dev: usb.core.Device) -> tuple[dict[str, str], str]:
    """(serial, manufacturer, product by name; a note saying why they could not be read)."""
    try:
        return {n: getattr(dev, n) or "" for n in STRING_NAMES}, ""
    except (usb.core.USBError, ValueError, NotImplementedError) as err:  # no access or none
        return dict.fromkeys(STRING_NAMES, ""), f"cannot read strings: {err} (see docs/udev)"
    finally:
        usb.util.dispose_resources(dev)  # reading them opened the device


def _info(dev: usb.core.Device) -> UsbDeviceInfo:
    strings, note = _strings(dev)
    return UsbDeviceInfo(dev.idVendor, dev.idProduct, dev.bus or 0, dev.address or 0,
                         tuple(dev.port_numbers or ()), strings["serial_number"],
                         strings["manufacturer"], strings["product"], _modes(dev), note)


def _all_devices(what: str) -> list[usb.core.Device]:
    """Every device on the bus; pyusb's own requests (strings) get our timeout too."""
    backend = get_backend()
    with _mapped(0, DEFAULT_TIMEOUT_MS, what):
        found = list(usb.core.find(find_all=True, backend=backend))
    for dev in found:
        dev.default_timeout = DEFAULT_TIMEOUT_MS
    return found


def list_devices(known_only: bool = True) -> list[UsbDeviceInfo]:
    """Devices on the bus (by default only those in a mode we speak), with their serials."""
    found = _all_devices("enumerating devices")
    infos = []
    for dev in found:
        if known_only and not _modes(dev):
            continue
        with _mapped(0, DEFAULT_TIMEOUT_MS, f"reading {dev.idVendor:04x}:{dev.idProduct:04x}"):
            infos.append(_info(dev))
    return infos


def _matches(dev: usb.core.Device, loc: Locator) -> bool:
    if loc.vid is not None and (dev.idVendor, dev.idProduct) != (loc.vid, loc.pid):
        return False
    if loc.bus is not None and (dev.bus, tuple(dev.port_numbers or ())) != (loc.bus, loc.ports):
        return False
    return loc.serial is None or _strings(dev)[0]["serial_number"] == loc.serial


def find_device(loc: Locator, mode_check: Callable[[usb.core.Device], bool],
                what: str) -> usb.core.Device:
    """The one device that matches ``loc`` and passes ``mode_check``.

    Raises:
        DeviceError: none matches. UsageError: several match (say which to use).
    """
    devices = _all_devices(f"looking for {what}")
    with _mapped(0, DEFAULT_TIMEOUT_MS, f"looking for {what}"):
        found = [d for d in devices if mode_check(d) and _matches(d, loc)]
    if not found:
        raise DeviceError(f"no {what} found ({loc.describe()}); see `imager devices`")
    if len(found) > 1:
        names = ", ".join(f"{d.idVendor:04x}:{d.idProduct:04x} on bus {d.bus} port "
                          f"{'.'.join(map(str, d.port_numbers or ()))}" for d in found)
        raise UsageError(f"{len(found)} {what}s match ({names}): add @SERIAL or a bus-port")
    return found[0]


@contextlib.contextmanager
def _mapped(endpoint: int, ms: int, what: str) -> Iterator[None]:
    """pyusb errors -> our tree, caught narrowly in the layer that owns them."""
    try:
        yield
    except usb.core.USBTimeoutError as err:
        raise TransportTimeout(endpoint, ms, what) from err
    except usb.core.USBError as err:
        if err.errno in GONE_ERRNOS:
            raise DeviceGone(f"USB device gone while {what} ({err.strerror})") from err
        if err.errno == errno.EPIPE:
            raise TransportStall(endpoint, what) from err
        if err.errno == errno.EOVERFLOW:
            raise ProtocolError(f"USB endpoint {endpoint:#04x} sent more than requested while "
                                f"{what}", endpoint) from err
        if err.errno == errno.EACCES:
            raise DeviceError(f"no permission for the USB device while {what}: install "
                              "docs/udev/70-imager.rules or run as root") from err
        if err.errno == errno.EBUSY:
            raise DeviceError(f"USB interface busy while {what}: another program holds it") \
                from err
        raise TransportError(f"USB error while {what}: {err.strerror or err}", endpoint) from err
    except usb.core.NoBackendError as err:
        raise DeviceError(f"no USB backend: {err}") from err


@dataclass
class UsbTransport:
    """One claimed interface of one device, with its bulk IN/OUT endpoints."""

    device: usb.core.Device
    interface: int
    ep_in: int
    ep_out: int
    max_packet: int
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    detached: bool = False
    info: dict = field(default_factory=dict)

    @classmethod
    def open(cls, loc: Locator, triple: tuple[int, int, int] | None, what: str, *,
             ids: tuple[int, int] | None = None, timeout_ms: int = DEFAULT_TIMEOUT_MS,
             before_claim: Callable[[int, tuple[int, ...], int], None] | None = None,
             ) -> UsbTransport:
        """Find, detach the kernel driver, claim the interface with class ``triple`` (or the
        first one when None, for devices matched by ``ids``).

        ``before_claim(bus, ports, interface)`` runs before anything is detached; it raises
        to refuse the device (e.g. usb-storage has it mounted)."""
        def mode_check(dev: usb.core.Device) -> bool:
            if ids is not None and (dev.idVendor, dev.idProduct) != ids:
                return False
            return triple is None or _find_interface(dev, triple) is not None

        dev = find_device(loc, mode_check, what)
        with _mapped(0, timeout_ms, f"opening {what}"):
            intf = _find_interface(dev, triple)
            if before_claim is not None:
                before_claim(dev.bus or 0, tuple(dev.port_numbers or ()), intf.bInterfaceNumber)
            info = _info_strings(dev)      # before claiming: reading them ends in a dispose
            transport = cls._claim(dev, intf, timeout_ms)
            transport.info = info
        return transport

    @classmethod
    def _claim(cls, dev: usb.core.Device, intf: usb.core.Interface,
               timeout_ms: int) -> UsbTransport:
        number = intf.bInterfaceNumber
        detached = False
        with contextlib.suppress(NotImplementedError):  # not on every platform
            if dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
                detached = True
        usb.util.claim_interface(dev, number)
        eps = {usb.util.endpoint_direction(e.bEndpointAddress): e for e in intf
               if usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK}
        if len(eps) != 2:
            raise DeviceError(f"interface {number} lacks a bulk IN/OUT endpoint pair")
        ep_in, ep_out = eps[usb.util.ENDPOINT_IN], eps[usb.util.ENDPOINT_OUT]
        return cls(dev, number, ep_in.bEndpointAddress, ep_out.bEndpointAddress,
                   ep_in.wMaxPacketSize, timeout_ms, detached)

    # ---- transfers: every one with an explicit timeout -----------------------------------
    def write(self, data: bytes | memoryview, timeout_ms: int | None = None,
              what: str = "bulk write") -> int:
        ms = timeout_ms or self.timeout_ms
        with _mapped(self.ep_out, ms, what):
            return self.device.write(self.ep_out, data, ms)

    def read(self, length: int, timeout_ms: int | None = None, what: str = "bulk read") -> bytes:
        ms = timeout_ms or self.timeout_ms
        with _mapped(self.ep_in, ms, what):
            return self.device.read(self.ep_in, length, ms).tobytes()

    def control_in(self, request_type: int, request: int, value: int, length: int,
                   timeout_ms: int | None = None, what: str = "control IN") -> bytes:
        ms = timeout_ms or self.timeout_ms
        with _mapped(0, ms, what):
            return self.device.ctrl_transfer(request_type, request, value, self.interface,
                                             length, ms).tobytes()

    def control_out(self, request_type: int, request: int, value: int, data: bytes = b"",
                    timeout_ms: int | None = None, what: str = "control OUT") -> int:
        ms = timeout_ms or self.timeout_ms
        with _mapped(0, ms, what):
            return self.device.ctrl_transfer(request_type, request, value, self.interface,
                                             data or None, ms)

    def clear_halt(self, endpoint: int) -> None:
        with _mapped(endpoint, self.timeout_ms, f"clearing halt on {endpoint:#04x}"):
            self.device.clear_halt(endpoint)

    def reset_port(self) -> None:
        """USB port reset (the heavier recovery); the interface is claimed again (a kernel
        driver that re-bound during the reset is detached again)."""
        with _mapped(0, self.timeout_ms, "resetting the port"):
            self.device.reset()
            with contextlib.suppress(NotImplementedError):
                if self.device.is_kernel_driver_active(self.interface):
                    self.device.detach_kernel_driver(self.interface)
            usb.util.claim_interface(self.device, self.interface)

    def close(self, reattach: bool = True) -> None:
        """Release the interface and, if ``reattach``, give the kernel driver back (it may
        then probe and automount the device). Safe to call twice."""
        if self.device is None:
            return
        dev, self.device = self.device, None
        with contextlib.suppress(usb.core.USBError, NotImplementedError):
            usb.util.release_interface(dev, self.interface)
            if self.detached and reattach:
                dev.attach_kernel_driver(self.interface)
        usb.util.dispose_resources(dev)


def _find_interface(dev: usb.core.Device,
                    triple: tuple[int, int, int] | None) -> usb.core.Interface | None:
    for cfg in dev:
        for intf in cfg:
            if triple is None or (intf.bInterfaceClass, intf.bInterfaceSubClass,
                                  intf.bInterfaceProtocol) == triple:
                return intf
    return None


def _info_strings(dev: usb.core.Device) -> dict:
    info = {"vid": f"{dev.idVendor:04x}", "pid": f"{dev.idProduct:04x}", "bus": dev.bus,
            "port": ".".join(map(str, dev.port_numbers or ()))}
    return {**info, **_strings(dev)[0]}
