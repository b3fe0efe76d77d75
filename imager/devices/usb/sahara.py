"""Sahara (the Qualcomm PBL protocol in EDL mode): upload the Firehose programmer.

Flow (specs/qualcomm-edl.md): device HELLO -> host HELLO_RESP (image mode) -> the device asks
for pieces of the programmer with READ_DATA / READ_DATA_64 (image id, offset, length) and the
host sends exactly those bytes -> END_OF_IMAGE (status 0) -> host DONE -> DONE_RESP. All fields
are little-endian u32 (u64 in READ_DATA_64). Every packet from the device is checked: a length
field that disagrees with what arrived, or a request outside the file, is a ProtocolError.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from imager.devices.usb.transport import UsbTransport
from imager.errors import DeviceError, ProtocolError

log = logging.getLogger(__name__)

HELLO, HELLO_RESP, READ_DATA, END_OF_IMAGE, DONE, DONE_RESP = 1, 2, 3, 4, 5, 6
READ_DATA_64 = 0x12
MODE_IMAGE_TX_PENDING = 0
HOST_VERSION, HOST_VERSION_COMPATIBLE = 2, 1
PACKET_LENGTHS = {HELLO: 0x30, READ_DATA: 0x14, END_OF_IMAGE: 0x10, DONE_RESP: 0x0C,
                  READ_DATA_64: 0x20}
MAX_REQUESTS = 1 << 20            # a device asking more often than this is looping


@dataclass(frozen=True)
class Packet:
    """One Sahara packet from the device: command and its u32/u64 fields."""

    cmd: int
    fields: tuple[int, ...]


def parse_packet(data: bytes) -> Packet:
    """Decode a device packet.

    Raises:
        ProtocolError: too short, a length field that disagrees, or an unknown command.
    """
    if len(data) < 8:
        raise ProtocolError(f"Sahara: {len(data)}-byte packet, a header needs 8")
    cmd, length = struct.unpack_from("<II", data)
    if length != len(data):
        raise ProtocolError(f"Sahara: packet {cmd:#x} says {length} bytes, {len(data)} arrived")
    want = PACKET_LENGTHS.get(cmd)
    if want is None or length != want:
        raise ProtocolError(f"Sahara: unexpected packet {cmd:#x} of {length} bytes "
                            f"(expected one of {sorted(PACKET_LENGTHS)})")
    fmt = "<QQQ" if cmd == READ_DATA_64 else f"<{(length - 8) // 4}I"
    return Packet(cmd, struct.unpack_from(fmt, data, 8))


def is_hello(data: bytes) -> bool:
    """True when ``data`` is a Sahara HELLO (a phone freshly in PBL mode)."""
    return len(data) == 0x30 and struct.unpack_from("<II", data) == (HELLO, 0x30)


def hello_resp(mode: int = MODE_IMAGE_TX_PENDING) -> bytes:
    return struct.pack("<12I", HELLO_RESP, 0x30, HOST_VERSION, HOST_VERSION_COMPATIBLE, 0,
                       mode, 0, 0, 0, 0, 0, 0)


def write_packet(transport: UsbTransport, data: bytes, what: str) -> None:
    """Write with the ZLP rule: a multiple of wMaxPacketSize is followed by a zero-length packet."""
    transport.write(data, what=what)
    if data and len(data) % transport.max_packet == 0:
        transport.write(b"", what=f"{what} (ZLP)")


def upload(transport: UsbTransport, loader: bytes, hello: bytes) -> None:
    """Answer ``hello`` and upload ``loader`` as the device asks for it.

    Raises:
        DeviceError: the device refused the programmer (END_OF_IMAGE status != 0).
        ProtocolError: malformed packets or requests outside the file.
    """
    packet = parse_packet(hello)
    if packet.cmd != HELLO:
        raise ProtocolError(f"Sahara: expected HELLO, got packet {packet.cmd:#x}")
    log.info("Sahara HELLO: version %d, mode %d", packet.fields[0], packet.fields[3])
    write_packet(transport, hello_resp(), "Sahara HELLO_RESP")
    for _ in range(MAX_REQUESTS):
        packet = parse_packet(transport.read(4096, what="Sahara request"))
        if packet.cmd in (READ_DATA, READ_DATA_64):
            _send_piece(transport, loader, *packet.fields[:3])
        elif packet.cmd == END_OF_IMAGE:
            _finish(transport, *packet.fields[:2])
            return
        else:
            raise ProtocolError(f"Sahara: unexpected packet {packet.cmd:#x} during upload")
    raise ProtocolError(f"Sahara: more than {MAX_REQUESTS} requests; the device is looping")


def _send_piece(transport: UsbTransport, loader: bytes, image_id: int, offset: int,
                length: int) -> None:
    if offset >= len(loader) or not 0 < length <= 1 << 24:
        raise ProtocolError(f"Sahara: the device asks bytes {offset}+{length} of image "
                            f"{image_id:#x}, the programmer has {len(loader)} bytes")
    piece = loader[offset:offset + length]
    piece += b"\xff" * (length - len(piece))   # past EOF: 0xFF, as bkerler/edl pads
    write_packet(transport, piece, f"Sahara image data {offset}+{length}")


def _finish(transport: UsbTransport, image_id: int, status: int) -> None:
    if status != 0:
        raise DeviceError(f"Sahara: the phone refused the programmer (image {image_id:#x}, "
                          f"END_OF_IMAGE status {status:#x}): wrong --loader for this phone?")
    write_packet(transport, struct.pack("<II", DONE, 8), "Sahara DONE")
    packet = parse_packet(transport.read(4096, what="Sahara DONE_RESP"))
    if packet.cmd != DONE_RESP:
        raise ProtocolError(f"Sahara: expected DONE_RESP, got packet {packet.cmd:#x}")
    if packet.fields[0] != 1:
        raise DeviceError(f"Sahara: DONE_RESP status {packet.fields[0]} (more images pending); "
                          "only single-programmer uploads are supported")
