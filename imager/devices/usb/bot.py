"""USB Mass Storage Bulk-Only Transport, host side (specs/usb-mass-storage.md).

One ``BotLink.command`` = CBW out, optional data stage, CSW in, with the spec's recovery:
a STALL in the data stage is cleared and the CSW still read; a zero-length CSW read is retried
once and a stalled one read again after clearing the halt; an invalid or not meaningful CSW
(size, signature, tag, status > 2, residue > requested) or a phase error ends in reset recovery
(Bulk-Only Mass Storage Reset, then CLEAR_FEATURE(HALT) on bulk IN, then bulk OUT) and raises,
so the caller may retry the command on a clean link.

A link opened read-only refuses write-class opcodes before anything reaches the wire.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from imager.devices.usb.transport import UsbTransport
from imager.errors import ProtocolError, TransportError, TransportStall, TransportTimeout

log = logging.getLogger(__name__)

CBW_SIGNATURE, CSW_SIGNATURE = 0x43425355, 0x53425355
CBW_LENGTH, CSW_LENGTH = 31, 13
BOT_RESET, GET_MAX_LUN = 0xFF, 0xFE
STATUS_GOOD, STATUS_FAILED, STATUS_PHASE = 0, 1, 2

# Opcodes that change the medium (SBC/SPC): WRITE(6/10/12/16), WRITE AND VERIFY(10/12/16),
# WRITE SAME(10/16), FORMAT UNIT, UNMAP, WRITE BUFFER, MODE SELECT(6/10).
WRITE_CLASS = frozenset({0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E, 0x41, 0x93, 0x04, 0x42,
                         0x3B, 0x15, 0x55})


class PhaseError(ProtocolError):
    """The device answered CSW status 2; the link was reset."""


@dataclass(frozen=True)
class BotResult:
    """``status`` 0/1, the data actually valid (requested minus residue) and the residue."""

    status: int
    data: bytes
    residue: int


class BotLink:
    """Commands over one claimed mass-storage interface."""

    def __init__(self, transport: UsbTransport, lun: int = 0, read_only: bool = True) -> None:
        self.transport = transport
        self.lun = lun
        self.read_only = read_only
        self._tag = 0
        self.recoveries = 0

    def max_lun(self) -> int:
        """Get Max LUN; a STALL means a single LUN (BOT 3.2)."""
        try:
            raw = self.transport.control_in(0xA1, GET_MAX_LUN, 0, 1, what="Get Max LUN")
        except TransportStall:
            return 0
        return raw[0] & 0x0F if raw else 0

    def command(self, cdb: bytes, *, data_in: int = 0, data_out: bytes | memoryview | None = None,
                timeout_ms: int | None = None, what: str = "") -> BotResult:
        """Run one command. Raises TransportError subclasses (after reset recovery)."""
        if self.read_only and cdb[0] in WRITE_CLASS:
            raise PermissionError(f"opcode {cdb[0]:#04x} changes the medium; this link is "
                                  "read-only")
        what = what or f"opcode {cdb[0]:#04x}"
        length = data_in or (len(data_out) if data_out is not None else 0)
        self._tag = (self._tag + 1) & 0xFFFFFFFF
        tag = self._tag
        cbw = struct.pack("<IIIBBB16s", CBW_SIGNATURE, tag, length, 0x80 if data_in else 0,
                          self.lun, len(cdb), bytes(cdb))
        try:
            self.transport.write(cbw, timeout_ms, what=f"{what}: CBW")
        except TransportError:         # a refused CBW (STALL) or no answer: reset recovery
            self.reset_recovery()
            raise
        data = self._data_stage(data_in, data_out, timeout_ms, what)
        status, residue = self._status(tag, length, timeout_ms, what)
        return BotResult(status, data[:length - residue], residue)

    def _data_stage(self, data_in: int, data_out: bytes | memoryview | None,
                    timeout_ms: int | None, what: str) -> bytes:
        t = self.transport
        try:
            if data_in:
                return t.read(data_in, timeout_ms, what=f"{what}: data in")
            if data_out is not None and len(data_out):
                t.write(data_out, timeout_ms, what=f"{what}: data out")
        except TransportStall as err:  # the device ended the data stage early: CSW follows
            t.clear_halt(err.endpoint)
        except TransportError:         # timeout, overflow: the device state is unknown
            self.reset_recovery()
            raise
        return b""

    def _status(self, tag: int, length: int, timeout_ms: int | None,
                what: str) -> tuple[int, int]:
        try:
            raw = self._read_csw(timeout_ms, what)
        except TransportStall:         # _read_csw already ran reset recovery
            raise
        except TransportError:
            self.reset_recovery()
            raise
        problem = ""
        if len(raw) != CSW_LENGTH:
            problem = f"CSW is {len(raw)} bytes, expected {CSW_LENGTH}"
        else:
            sig, got_tag, residue, status = struct.unpack("<IIIB", raw)
            if sig != CSW_SIGNATURE:
                problem = f"CSW signature {sig:#010x}, expected {CSW_SIGNATURE:#010x}"
            elif got_tag != tag:
                problem = f"CSW tag {got_tag}, expected {tag}"
            elif status > STATUS_PHASE:
                problem = f"CSW status {status} is not 0, 1 or 2"
            elif status != STATUS_PHASE and residue > length:
                # BOT 6.3.2: a CSW is meaningful only if residue <= the requested length
                problem = f"CSW residue {residue} is larger than the {length} bytes requested"
        if problem:
            self.reset_recovery()
            raise ProtocolError(f"{what}: {problem}")
        if status == STATUS_PHASE:
            self.reset_recovery()
            raise PhaseError(f"{what}: device reported a phase error")
        return status, residue

    def _read_csw(self, timeout_ms: int | None, what: str) -> bytes:
        t = self.transport
        try:
            raw = t.read(CSW_LENGTH, timeout_ms, what=f"{what}: CSW")
            if not raw:  # a zero-length packet first: read once more (as Linux does)
                raw = t.read(CSW_LENGTH, timeout_ms, what=f"{what}: CSW")
            return raw
        except TransportStall:
            t.clear_halt(t.ep_in)
        try:
            return t.read(CSW_LENGTH, timeout_ms, what=f"{what}: CSW after clearing halt")
        except TransportStall:
            self.reset_recovery()
            raise

    def reset_recovery(self) -> None:
        """Bulk-Only Mass Storage Reset, then clear HALT on bulk IN and bulk OUT (BOT 5.3.4).

        Falls back to a USB port reset when the class reset itself fails.
        """
        t = self.transport
        self.recoveries += 1
        log.info("USB mass storage: reset recovery")
        try:
            t.control_out(0x21, BOT_RESET, 0, what="Bulk-Only Mass Storage Reset")
            t.clear_halt(t.ep_in)
            t.clear_halt(t.ep_out)
        except (TransportStall, TransportTimeout) as err:
            log.warning("reset recovery failed (%s); resetting the USB port", err)
            t.reset_port()

