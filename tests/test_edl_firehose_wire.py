"""The host's Firehose framing against hand-built device output (specs/qualcomm-edl.md):
several documents in one transfer, raw data sharing a transfer with its ACK, hostile XML."""

from __future__ import annotations

import pytest

from imager.devices.usb.firehose import FirehoseClient, FirehoseNak, parse_document
from imager.errors import ProtocolError

XML = b'<?xml version="1.0" encoding="UTF-8" ?><data>'


def doc(body: str) -> bytes:
    return XML + body.encode() + b"</data>"


class Wire:
    """A transport stand-in: scripted IN transfers, recorded OUT transfers."""

    max_packet = 512

    def __init__(self, *reads: bytes) -> None:
        self.reads, self.written = list(reads), []

    def read(self, length: int, timeout_ms: int | None = None, what: str = "") -> bytes:
        data = self.reads.pop(0)
        assert len(data) <= length
        return data

    def write(self, data: bytes, timeout_ms: int | None = None, what: str = "") -> int:
        self.written.append(bytes(data))
        return len(data)


def test_log_and_response_in_one_transfer() -> None:
    wire = Wire(doc('<log value="INFO: hello" />') + doc('<response value="ACK" />'))
    r = FirehoseClient(wire).command("nop", "nop")
    assert r.ack and r.logs == ["INFO: hello"]
    assert wire.written == [b'<?xml version="1.0" ?><data><nop /></data>']


def test_raw_data_sharing_a_transfer_with_its_ack() -> None:
    data = bytes(range(256)) * 8                     # four 512-byte sectors
    wire = Wire(doc('<response value="ACK" rawmode="true" />') + data[:700], data[700:],
                doc('<response value="ACK" rawmode="false" />'))
    client = FirehoseClient(wire)
    assert client.read(0, 512, 8, 4) == data
    sent = wire.written[0].decode()
    for attr in ('SECTOR_SIZE_IN_BYTES="512"', 'num_partition_sectors="4"',
                 'physical_partition_number="0"', 'start_sector="8"'):
        assert attr in sent


def test_nak_carries_the_device_log() -> None:
    wire = Wire(doc('<log value="ERROR: Read Failed sector 9, size 4 result 1" />'),
                doc('<response value="NAK" />'))
    with pytest.raises(FirehoseNak, match="Read Failed sector 9"):
        FirehoseClient(wire).read(0, 512, 8, 4)


def test_entity_declarations_are_refused() -> None:
    evil = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaa">]>'
            b'<data><log value="&a;&a;" /></data>')
    with pytest.raises(ProtocolError, match="DTD"):
        parse_document(evil)
    with pytest.raises(ProtocolError, match="malformed"):
        parse_document(XML + b"<log value='x' </data>")


def test_configure_adopts_a_smaller_supported_payload() -> None:
    ack = ('<response value="ACK" MaxPayloadSizeToTargetInBytes="{0}" '
           'MaxPayloadSizeToTargetInBytesSupported="{1}" MemoryName="UFS" />')
    wire = Wire(doc(ack.format(1 << 20, 16384)), doc(ack.format(16384, 16384)))
    client = FirehoseClient(wire)
    client.configure("UFS", 1 << 20)
    assert client.max_payload == 16384
    assert b'MaxPayloadSizeToTargetInBytes="16384"' in wire.written[-1]
