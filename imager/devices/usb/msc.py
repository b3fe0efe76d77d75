"""USB mass storage (``usb-msc:``) as a Source and a Target.

``usb-msc:`` alone takes the only mass-storage device on the bus; ``usb-msc:VID:PID``,
``usb-msc:@SERIAL`` or ``usb-msc:1-2.3`` (bus-port) choose one. Options: ``lun``,
``timeout_ms``, ``max_transfer_bytes`` (default 1 MiB per command), ``retries``.

Write blocking by construction: ``MscSource`` opens its BOT link read-only (write-class
opcodes are refused before the wire) and the write CDBs are built only in ``MscTarget``.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from imager.devices.base import BaseSource, BaseTarget, Identity
from imager.devices.usb import kernel
from imager.devices.usb.bot import BotLink
from imager.devices.usb.scsi import KEY_MEDIUM_ERROR, ScsiCheck, ScsiDevice, read_cdb
from imager.devices.usb.transport import MSC_CLASS, UsbTransport, parse_locator
from imager.errors import (
    BadInput,
    ReadError,
    TargetRefused,
    TransportTimeout,
    UsageError,
    WriteError,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TRANSFER = 1 << 20     # bytes per READ/WRITE: fast on USB 2/3, within gadget limits
DEFAULT_TIMEOUT_MS = 20000         # a READ of a weak area can take seconds before the answer


class _MscDevice:
    """What Source and Target share: opening, identity, reading."""

    scsi: ScsiDevice
    transport: UsbTransport
    sector_size: int
    identity: Identity

    def _open(self, rest: str, sector_size: int | None, read_only: bool,
              opts: dict[str, Any]) -> tuple[int, int, Identity]:
        unknown = set(opts) - {"lun", "timeout_ms", "max_transfer_bytes", "retries"}
        if unknown:
            raise UsageError(f"usb-msc: unknown option(s) {', '.join(sorted(unknown))}")
        timeout = int(opts.get("timeout_ms", DEFAULT_TIMEOUT_MS))
        self.transport = UsbTransport.open(parse_locator(rest), MSC_CLASS,
                                           "USB mass-storage device", timeout_ms=timeout,
                                           before_claim=_refuse_if_mounted)
        try:
            return self._setup(rest, sector_size, read_only, opts, timeout)
        except BaseException:
            self.transport.close()
            raise

    def _setup(self, rest: str, sector_size: int | None, read_only: bool,
               opts: dict[str, Any], timeout: int) -> tuple[int, int, Identity]:
        lun = int(opts.get("lun", 0))
        link = BotLink(self.transport, lun=0, read_only=read_only)
        max_lun = link.max_lun()
        if not 0 <= lun <= max_lun:
            raise UsageError(f"usb-msc:{rest}: LUN {lun} requested, the device has 0..{max_lun}")
        link.lun = lun
        self.scsi = ScsiDevice(link, retries=int(opts.get("retries", 3)), timeout_ms=timeout)
        inquiry = self.scsi.inquiry()
        self.scsi.test_unit_ready()
        count, block = self.scsi.capacity()
        if sector_size and sector_size != block:
            raise BadInput(f"usb-msc:{rest}: --sector-size {sector_size} but the device "
                           f"reports {block}-byte blocks")
        info = self.transport.info
        identity = Identity(
            kind="usb-msc", path=f"usb-msc:{rest}", size_bytes=count * block,
            sector_size=block, model=f"{inquiry.vendor} {inquiry.product}".strip(),
            serial=info.get("serial_number", ""),
            extra={"vid": info["vid"], "pid": info["pid"], "lun": lun,
                   "revision": inquiry.revision, "usb_port": f"{info['bus']}-{info['port']}",
                   "usb_product": info.get("product", "")})
        return block, count, identity

    def _transfer_sectors(self, opts: dict[str, Any]) -> int:
        wanted = int(opts.get("max_transfer_bytes", DEFAULT_MAX_TRANSFER))
        return max(1, min(wanted // self.sector_size, 0xFFFFFFFF))

    def _read(self, lba: int, count: int) -> bytes:
        what = f"READ of LBA {lba}+{count}"
        try:
            data = self.scsi.run(read_cdb(lba, count), data_in=count * self.sector_size,
                                 what=what)
        except ScsiCheck as err:
            raise _read_error(lba, count, err) from err
        except TransportTimeout as err:  # a device stuck on a bad area looks like this
            raise ReadError(lba, count, f"no answer: {err}") from err
        if len(data) != count * self.sector_size:
            raise ReadError(lba, count, f"device sent {len(data)} of "
                                        f"{count * self.sector_size} bytes")
        return data

    # Handing the disk back to usb-storage lets the desktop automount it (and a mount may
    # write: journal replay), so after reading it stays detached until it is re-plugged.
    reattach_driver = False

    def close(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close(reattach=self.reattach_driver)


def _refuse_if_mounted(bus: int, ports: tuple[int, ...], interface: int) -> None:
    """Detaching usb-storage under a mounted file system loses its unwritten data."""
    for disk in kernel.bound_block_devices(bus, ports, interface):
        points = kernel.mount_points(disk)
        if points:
            raise TargetRefused(f"USB disk {bus}-{'.'.join(map(str, ports))} is /dev/{disk}, "
                                f"mounted at {', '.join(points)}: unmount it first (or "
                                f"image /dev/{disk} directly)")


def _read_error(lba: int, count: int, err: ScsiCheck) -> ReadError:
    """A medium error names the first failed LBA when the sense INFORMATION is valid."""
    sense = err.sense
    if sense.key == KEY_MEDIUM_ERROR and sense.info is not None and \
            lba <= sense.info < lba + count:
        bad = sense.info
        return ReadError(bad, lba + count - bad, f"medium error ({sense})")
    return ReadError(lba, count, f"SCSI {sense}")


class MscSource(_MscDevice, BaseSource):
    """A mass-storage device opened for reading only: no code path sends a write command."""

    def __init__(self, rest: str, sector_size: int | None = None, **opts: Any) -> None:
        block, count, identity = self._open(rest, sector_size, True, opts)
        BaseSource.__init__(self, block, count, identity)
        self.max_transfer_sectors = self._transfer_sectors(opts)


WRITE_10, WRITE_16, SYNC_CACHE_10 = 0x2A, 0x8A, 0x35


class MscTarget(_MscDevice, BaseTarget):
    """A mass-storage device opened for writing (restore); usb-storage gets it back after."""

    reattach_driver = True

    def __init__(self, rest: str, sector_size: int | None = None, **opts: Any) -> None:
        opts.pop("create_size", None)
        block, count, identity = self._open(rest, sector_size, False, opts)
        BaseTarget.__init__(self, block, count, identity)
        self.max_transfer_sectors = self._transfer_sectors(opts)
        if self.scsi.write_protected():
            self.close()
            raise TargetRefused(f"{identity.path}: the medium is write-protected")

    @staticmethod
    def _write_cdb(lba: int, count: int) -> bytes:
        if lba + count - 1 > 0xFFFFFFFF or count > 0xFFFF:
            return struct.pack(">BBQIBB", WRITE_16, 0, lba, count, 0, 0)
        return struct.pack(">BBIBHB", WRITE_10, 0, lba, 0, count, 0)

    def _write(self, lba: int, data: memoryview) -> None:
        count = len(data) // self.sector_size
        try:
            self.scsi.run(self._write_cdb(lba, count), data_out=data,
                          what=f"WRITE of LBA {lba}+{count}")
        except ScsiCheck as err:
            raise WriteError(lba, count, f"SCSI {err.sense}") from err

    def flush(self) -> None:
        """SYNCHRONIZE CACHE(10) over the whole medium."""
        self.scsi.run(bytes([SYNC_CACHE_10]) + bytes(9), what="SYNCHRONIZE CACHE")


def open_source(rest: str, sector_size: int | None = None, **opts: Any) -> MscSource:
    """``usb-msc:[VID:PID|@SERIAL|BUS-PORT]`` for reading (see the module docstring)."""
    return MscSource(rest, sector_size=sector_size, **opts)


def open_target(rest: str, sector_size: int | None = None, **opts: Any) -> MscTarget:
    """``usb-msc:[VID:PID|@SERIAL|BUS-PORT]`` for writing."""
    return MscTarget(rest, sector_size=sector_size, **opts)
