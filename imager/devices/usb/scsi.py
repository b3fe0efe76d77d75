"""SCSI over a BOT link: CDBs for the read side, parsers, sense, and the retry policy.

CDB and parameter fields are big-endian (specs/usb-mass-storage.md). Write CDBs are NOT here:
they exist only in ``msc.MscTarget`` so the code a Source runs cannot build one.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from imager.devices.usb.bot import STATUS_GOOD, BotLink
from imager.errors import BadInput, DeviceError, ProtocolError, TransportError

log = logging.getLogger(__name__)

TEST_UNIT_READY, REQUEST_SENSE, INQUIRY, MODE_SENSE_6 = 0x00, 0x03, 0x12, 0x1A
READ_CAPACITY_10, READ_10, READ_16, SERVICE_ACTION_IN_16 = 0x25, 0x28, 0x88, 0x9E
SA_READ_CAPACITY_16 = 0x10
KEY_NOT_READY, KEY_MEDIUM_ERROR, KEY_UNIT_ATTENTION, KEY_ABORTED = 0x2, 0x3, 0x6, 0xB
MAX_BYTES = 1 << 52     # 4 PiB: a larger capacity is a device answering nonsense


@dataclass(frozen=True)
class Sense:
    """Sense key / ASC / ASCQ and, for medium errors, the failing LBA (``info``) when valid."""

    key: int
    asc: int
    ascq: int
    info: int | None = None

    def __str__(self) -> str:
        where = f", LBA {self.info}" if self.info is not None else ""
        return f"sense {self.key:X}/{self.asc:02X}/{self.ascq:02X}{where}"


class ScsiCheck(DeviceError):
    """CHECK CONDITION (CSW status 1) with the sense data that REQUEST SENSE returned."""

    def __init__(self, what: str, sense: Sense) -> None:
        super().__init__(f"{what}: {sense}")
        self.sense = sense


def parse_sense(raw: bytes) -> Sense:
    """Fixed (0x70/0x71) or descriptor (0x72/0x73) sense data."""
    if len(raw) < 3:
        return Sense(0, 0, 0)
    code = raw[0] & 0x7F
    if code in (0x72, 0x73) and len(raw) >= 4:
        return Sense(raw[1] & 0x0F, raw[2], raw[3])
    asc = raw[12] if len(raw) > 12 else 0
    ascq = raw[13] if len(raw) > 13 else 0
    info = struct.unpack_from(">I", raw, 3)[0] if raw[0] & 0x80 and len(raw) >= 7 else None
    return Sense(raw[2] & 0x0F, asc, ascq, info)


@dataclass(frozen=True)
class Inquiry:
    vendor: str
    product: str
    revision: str
    device_type: int
    removable: bool


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \0")


def parse_inquiry(raw: bytes) -> Inquiry:
    if len(raw) < 36:
        raise BadInput(f"INQUIRY answered {len(raw)} bytes, expected at least 36")
    return Inquiry(_ascii(raw[8:16]), _ascii(raw[16:32]), _ascii(raw[32:36]), raw[0] & 0x1F,
                   bool(raw[1] & 0x80))


def check_capacity(last_lba: int, block_size: int, which: str) -> tuple[int, int]:
    """(sector count, block size) from READ CAPACITY, refusing impossible answers."""
    if block_size < 512 or block_size % 512 or block_size > 65536 or \
            block_size & (block_size - 1):
        raise BadInput(f"{which}: block length {block_size} is not a power of two in 512..65536")
    count = last_lba + 1
    if count * block_size > MAX_BYTES:
        raise BadInput(f"{which}: capacity of {count} blocks of {block_size} bytes is absurd")
    return count, block_size


def read_cdb(lba: int, count: int) -> bytes:
    """READ(10), or READ(16) past 2^32 blocks or 0xFFFF blocks per command."""
    if lba + count - 1 > 0xFFFFFFFF or count > 0xFFFF:
        return struct.pack(">BBQIBB", READ_16, 0, lba, count, 0, 0)
    return struct.pack(">BBIBHB", READ_10, 0, lba, 0, count, 0)


class ScsiDevice:
    """Runs CDBs: retries after reset recovery, unit attention and aborted commands; turns
    CHECK CONDITION into ScsiCheck with the sense data."""

    def __init__(self, link: BotLink, retries: int = 3, timeout_ms: int | None = None) -> None:
        self.link = link
        self.retries = retries
        self.timeout_ms = timeout_ms

    def run(self, cdb: bytes, *, data_in: int = 0, data_out: bytes | memoryview | None = None,
            what: str = "") -> bytes:
        """The command's valid data (may be shorter than ``data_in`` for INQUIRY & co.)."""
        what = what or f"SCSI opcode {cdb[0]:#04x}"
        last: Exception | None = None
        for attempt in range(1 + self.retries):
            try:
                result = self.link.command(cdb, data_in=data_in, data_out=data_out,
                                           timeout_ms=self.timeout_ms, what=what)
            except TransportError as err:  # the link was recovered; DeviceGone is not caught
                last = err
                log.warning("%s: %s (attempt %d)", what, err, attempt + 1)
                continue
            if result.status == STATUS_GOOD:
                return result.data
            sense = self.request_sense()
            if sense.key in (KEY_UNIT_ATTENTION, KEY_ABORTED, KEY_NOT_READY):
                last = ScsiCheck(what, sense)
                log.info("%s: %s, retrying", what, sense)
                continue
            raise ScsiCheck(what, sense)
        assert last is not None
        raise last

    def request_sense(self) -> Sense:
        raw = self.link.command(bytes([REQUEST_SENSE, 0, 0, 0, 18, 0]), data_in=18,
                                timeout_ms=self.timeout_ms, what="REQUEST SENSE")
        return parse_sense(raw.data)

    def inquiry(self) -> Inquiry:
        raw = self.run(struct.pack(">BBBHB", INQUIRY, 0, 0, 36, 0), data_in=36, what="INQUIRY")
        return parse_inquiry(raw)

    def test_unit_ready(self) -> None:
        self.run(bytes(6), what="TEST UNIT READY")

    def capacity(self) -> tuple[int, int]:
        """(block count, block size); READ CAPACITY(16) when (10) says 0xFFFFFFFF."""
        raw = self.run(bytes([READ_CAPACITY_10]) + bytes(9), data_in=8,
                       what="READ CAPACITY(10)")
        if len(raw) != 8:
            raise ProtocolError(f"READ CAPACITY(10) answered {len(raw)} bytes, expected 8")
        last, size = struct.unpack(">II", raw)
        if last != 0xFFFFFFFF:
            return check_capacity(last, size, "READ CAPACITY(10)")
        cdb = struct.pack(">BBQIBB", SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16, 0, 32, 0, 0)
        raw = self.run(cdb, data_in=32, what="READ CAPACITY(16)")
        if len(raw) < 12:
            raise ProtocolError(f"READ CAPACITY(16) answered {len(raw)} bytes, expected 32")
        last, size = struct.unpack_from(">QI", raw)
        return check_capacity(last, size, "READ CAPACITY(16)")

    def write_protected(self) -> bool:
        """MODE SENSE(6) header WP bit; False when the device does not answer it."""
        try:
            raw = self.run(bytes([MODE_SENSE_6, 0, 0x3F, 0, 4, 0]), data_in=4,
                           what="MODE SENSE(6)")
        except ScsiCheck:
            return False
        return len(raw) >= 3 and bool(raw[2] & 0x80)
