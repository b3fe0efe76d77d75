"""Firehose (the XML protocol of a Qualcomm EDL programmer), host side.

Each command is one XML document; the device answers with ``<log value=.../>`` documents and one
``<response value="ACK|NAK" .../>`` (specs/qualcomm-edl.md). Several documents may arrive in one
USB transfer, so incoming bytes are buffered and cut at ``</data>``. ``read`` and ``program`` have
a raw data phase after an ACK with ``rawmode="true"``, closed by a final response.

Device answers are untrusted: documents are size-limited and any DTD/entity declaration is
refused before parsing (no entity expansion).
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from imager.devices.usb.sahara import write_packet
from imager.devices.usb.transport import UsbTransport
from imager.errors import DeviceError, ProtocolError

log = logging.getLogger(__name__)

MAX_DOC = 64 << 10           # bytes of XML buffered without a complete document: broken device
MAX_EMPTY_READS = 64         # zero-length packets tolerated in a row
DEFAULT_PAYLOAD = 1 << 20


class FirehoseNak(DeviceError):
    """The programmer answered NAK; ``logs`` are the log lines it sent with it."""

    def __init__(self, what: str, logs: list[str]) -> None:
        detail = "; ".join(logs[-3:]) or "no log"
        super().__init__(f"Firehose {what}: NAK ({detail})")
        self.logs = logs


@dataclass
class Response:
    """A ``<response>``: ACK or not, its attributes, and the log lines before it."""

    ack: bool
    attrs: dict[str, str]
    logs: list[str] = field(default_factory=list)


def command_xml(tag: str, attrs: dict[str, object]) -> bytes:
    """``<?xml version="1.0" ?><data><tag a="v" /></data>`` with attribute values escaped."""
    body = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
    return f'<?xml version="1.0" ?><data><{tag}{body} /></data>'.encode()


def parse_document(doc: bytes) -> list[tuple[str, dict[str, str]]]:
    """(tag, attributes) of every element inside ``<data>``.

    Raises:
        ProtocolError: not well-formed XML, or it declares a DTD/entities.
    """
    if b"<!DOCTYPE" in doc.upper() or b"<!ENTITY" in doc.upper():
        raise ProtocolError("Firehose: the device sent a DTD/entity declaration; refused")
    try:
        root = ET.fromstring(doc.decode("utf-8", "replace"))
    except ET.ParseError as err:
        raise ProtocolError(f"Firehose: malformed XML from the device ({err}): "
                            f"{doc[:120]!r}") from err
    return [(elem.tag, dict(elem.attrib)) for elem in root]


class FirehoseClient:
    """Commands over one claimed EDL interface, after the programmer is running."""

    def __init__(self, transport: UsbTransport, pending: bytes = b"") -> None:
        self.transport = transport
        self.buffer = bytearray(pending)
        self.max_payload = 0           # to target (program chunks), negotiated by configure
        self.max_from = DEFAULT_PAYLOAD
        self.memory = ""

    # ---- documents ---------------------------------------------------------------------
    def _fill(self, what: str) -> None:
        for _ in range(MAX_EMPTY_READS):
            data = self.transport.read(max(4096, self.max_from), what=what)
            if data:
                self.buffer += data
                return
        raise ProtocolError(f"Firehose: only zero-length packets while {what}")

    def _document(self, what: str) -> bytes:
        while True:
            start = self.buffer.find(b"<?xml")
            end = self.buffer.find(b"</data>", max(start, 0))
            if start >= 0 and end >= 0:
                doc = bytes(self.buffer[start:end + 7])
                if start:
                    log.debug("Firehose: skipped %d bytes before a document", start)
                del self.buffer[:end + 7]
                return doc
            if len(self.buffer) > MAX_DOC:
                raise ProtocolError(f"Firehose: {len(self.buffer)} bytes without a complete XML "
                                    f"document while {what}")
            self._fill(what)

    def response(self, what: str) -> Response:
        """Read documents until a ``<response>``; log lines are kept (and logged)."""
        logs: list[str] = []
        while True:
            for tag, attrs in parse_document(self._document(what)):
                if tag == "log":
                    logs.append(attrs.get("value", ""))
                    log.debug("firehose log: %s", logs[-1])
                elif tag == "response":
                    return Response(attrs.get("value", "").upper() == "ACK", attrs, logs)

    def command(self, tag: str, what: str, **attrs: object) -> Response:
        """Send one command and return its response (ACK or NAK)."""
        self.buffer.clear()
        write_packet(self.transport, command_xml(tag, attrs), f"Firehose {what}")
        return self.response(what)

    # ---- commands ----------------------------------------------------------------------
    def configure(self, memory: str, payload: int = DEFAULT_PAYLOAD) -> Response:
        """``configure`` with payload negotiation (the qdl/edl rules in the spec)."""
        for _ in range(4):
            r = self.command("configure", f"configure {memory}", MemoryName=memory,
                             MaxPayloadSizeToTargetInBytes=payload, ZlpAwareHost=1,
                             SkipStorageInit=0, SkipWrite=0, Verbose=0, AlwaysValidate=0,
                             MaxDigestTableSizeInBytes=2048)
            proposed = _int(r.attrs.get("MaxPayloadSizeToTargetInBytes"))
            if not r.ack:
                if proposed and proposed < payload:
                    payload = proposed          # the loader proposes a size: resend with it
                    continue
                raise FirehoseNak(f"configure {memory}", r.logs)
            supported = _int(r.attrs.get("MaxPayloadSizeToTargetInBytesSupported")) or payload
            if supported < payload:
                payload = supported
                continue
            self.max_payload = min(payload, proposed or payload)
            self.max_from = _int(r.attrs.get("MaxPayloadSizeFromTargetInBytes")) or payload
            self.memory = r.attrs.get("MemoryName", memory)
            return r
        raise ProtocolError(f"Firehose: configure never settled on a payload size (last {payload})")

    def storage_info(self, lun: int) -> dict | None:
        """The ``storage_info`` JSON of ``lun``, or None when the LUN does not exist (NAK)."""
        r = self.command("getstorageinfo", f"getstorageinfo LUN {lun}",
                         physical_partition_number=lun)
        if not r.ack:
            return None
        for line in r.logs:
            start = line.find("{")
            if start >= 0 and "storage_info" in line:
                try:
                    info = json.loads(line[start:])["storage_info"]
                except (ValueError, KeyError, TypeError) as err:
                    raise ProtocolError(f"Firehose: unreadable storage_info for LUN {lun}: "
                                        f"{line[:200]!r}") from err
                if isinstance(info, dict):
                    return info
        raise ProtocolError(f"Firehose: getstorageinfo LUN {lun} was ACKed without storage_info")

    def read(self, lun: int, sector_size: int, lba: int, count: int) -> bytes:
        """``count`` sectors from ``lba`` of ``lun``.

        Raises:
            FirehoseNak: the programmer refused or failed the read.
        """
        what = f"read LUN {lun} LBA {lba}+{count}"
        r = self.command("read", what, SECTOR_SIZE_IN_BYTES=sector_size,
                         num_partition_sectors=count, physical_partition_number=lun,
                         start_sector=lba)
        if not r.ack:
            raise FirehoseNak(what, r.logs)
        if r.attrs.get("rawmode", "").lower() != "true":
            raise ProtocolError(f"Firehose {what}: ACK without rawmode=\"true\"")
        data = self._raw_in(count * sector_size, sector_size, what)
        final = self.response(what)
        if not final.ack:
            raise FirehoseNak(what, r.logs + final.logs)
        return data

    def _raw_in(self, total: int, sector_size: int, what: str) -> bytes:
        out = bytearray(self.buffer[:total])
        del self.buffer[:total]
        step = max(sector_size, self.max_from // sector_size * sector_size)
        empty = 0
        while len(out) < total:
            data = self.transport.read(min(step, total - len(out)), what=what)
            empty = empty + 1 if not data else 0
            if empty > MAX_EMPTY_READS:
                raise ProtocolError(f"Firehose {what}: only zero-length packets in the data")
            out += data
        return bytes(out)

    def program(self, lun: int, sector_size: int, lba: int, data: bytes | memoryview) -> None:
        """Write whole sectors at ``lba`` of ``lun`` in chunks of the negotiated payload.

        Raises:
            FirehoseNak: the programmer refused the command or the data.
        """
        count = len(data) // sector_size
        what = f"program LUN {lun} LBA {lba}+{count}"
        r = self.command("program", what, SECTOR_SIZE_IN_BYTES=sector_size,
                         num_partition_sectors=count, physical_partition_number=lun,
                         start_sector=lba)
        if not r.ack:
            raise FirehoseNak(what, r.logs)
        step = self.max_payload // sector_size * sector_size
        if step <= 0:
            raise ProtocolError(f"Firehose: payload {self.max_payload} is below one "
                                f"{sector_size}-byte sector")
        view = memoryview(data)
        for off in range(0, len(view), step):
            write_packet(self.transport, bytes(view[off:off + step]), what)
        final = self.response(what)
        if not final.ack:
            raise FirehoseNak(what, final.logs)


def _int(text: str | None) -> int:
    try:
        return int(text or "0", 0)
    except ValueError:
        return 0
