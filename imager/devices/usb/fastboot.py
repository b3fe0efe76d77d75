"""fastboot (``fastboot:``): flashing partitions of a phone in bootloader mode.

Spec: ``fastboot:[VID:PID|@SERIAL|BUS-PORT]``. fastboot has no generic read, so it is a
Target for partition flashing only (``imager restore IMAGE fastboot: --partition NAME``), not a
block device: ``open_source`` refuses, ``open_target`` returns a ``FastbootDevice``.

Protocol (specs/fastboot.md): one ASCII command per bulk packet; ``INFO``/``TEXT`` lines until
``OKAY``/``FAIL``; ``download:%08x`` -> ``DATA%08x`` -> data -> ``OKAY``; ``flash:NAME``.
Flashing converts the partition's content (from a native, raw or sparse image, or a table-less
image holding just the partition) to Android sparse pieces of at most ``max-download-size``
(the sparse writer's resparse: each piece carries the full block count with DONT_CARE for the
rest), downloads and flashes them one by one. A name without ``_a``/``_b`` on a slotted
partition goes to the current slot. A FAIL answer is reported verbatim.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imager.devices.usb.transport import FASTBOOT_CLASS, UsbTransport, parse_locator
from imager.errors import DeviceError, ProtocolError, TargetRefused, UsageError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30000         # the host's response timeout (reset on every INFO)
MAX_COMMAND = 64                   # old bootloaders: commands <= 64 bytes
MAX_LINES = 100000                 # INFO floods are normal, endless ones are not
WRITE_STEP = 1 << 20


class FastbootFail(DeviceError):
    """The device answered FAIL; ``text`` is its reason, verbatim."""

    def __init__(self, command: str, text: str) -> None:
        super().__init__(f"fastboot {command}: FAIL{text}")
        self.command, self.text = command, text


def parse_number(text: str) -> int:
    """A size from getvar: ``0x1000`` or ``4096`` (whitespace trimmed)."""
    try:
        return int(text.strip(), 0)
    except ValueError as err:
        raise ProtocolError(f"fastboot: {text!r} is not a number") from err


class FastbootDevice:
    """One phone in fastboot mode."""

    def __init__(self, rest: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.spec = f"fastboot:{rest}"
        self.transport = UsbTransport.open(parse_locator(rest), FASTBOOT_CLASS,
                                           "fastboot device", timeout_ms=timeout_ms)
        self.info: list[str] = []
        self._max_download: int | None = None

    def close(self) -> None:
        self.transport.close(reattach=False)

    # ---- protocol ----------------------------------------------------------------------
    def _send(self, command: str) -> None:
        raw = command.encode("ascii")
        if len(raw) > MAX_COMMAND:
            raise UsageError(f"fastboot command {command!r} is longer than {MAX_COMMAND} bytes")
        self.transport.write(raw, what=f"fastboot {command}")

    def _answer(self, command: str) -> tuple[str, str]:
        """(OKAY|DATA, payload) after any INFO/TEXT lines; FAIL raises FastbootFail."""
        for _ in range(MAX_LINES):
            raw = self.transport.read(512, what=f"fastboot {command}")
            if not raw:
                continue
            kind, text = raw[:4].decode("ascii", "replace"), raw[4:].decode("utf-8", "replace")
            if kind in ("INFO", "TEXT"):
                self.info.append(text)
                log.info("(bootloader) %s", text)
            elif kind == "FAIL":
                raise FastbootFail(command, text)
            elif kind in ("OKAY", "DATA"):
                return kind, text
            else:
                raise ProtocolError(f"fastboot {command}: unexpected answer {raw[:64]!r}")
        raise ProtocolError(f"fastboot {command}: more than {MAX_LINES} INFO lines")

    def command(self, command: str) -> str:
        """Run ``command``; the OKAY payload."""
        self._send(command)
        kind, text = self._answer(command)
        if kind != "OKAY":
            raise ProtocolError(f"fastboot {command}: unexpected {kind}{text}")
        return text

    def getvar(self, name: str) -> str | None:
        """A variable's value, None when the device does not know it (FAIL)."""
        try:
            return self.command(f"getvar:{name}").strip()
        except FastbootFail:
            return None

    @property
    def max_download_size(self) -> int:
        if self._max_download is None:
            value = self.getvar("max-download-size")
            if not value:
                raise DeviceError(f"{self.spec}: the device does not say its max-download-size")
            self._max_download = parse_number(value)
        return self._max_download

    def download(self, data: bytes) -> None:
        """``download:%08x``, the data, OKAY."""
        command = f"download:{len(data):08x}"
        self._send(command)
        kind, text = self._answer(command)
        if kind != "DATA" or parse_number("0x" + text) != len(data):
            raise ProtocolError(f"fastboot {command}: answered {kind}{text}")
        view = memoryview(data)
        for off in range(0, len(view), WRITE_STEP):
            self.transport.write(view[off:off + WRITE_STEP], what=f"fastboot data {off}")
        kind, text = self._answer(command)
        if kind != "OKAY":
            raise ProtocolError(f"fastboot {command}: after the data {kind}{text}")

    # ---- partitions --------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The partition to flash: ``NAME_<current slot>`` for a slotted name without suffix."""
        if name.endswith(("_a", "_b")):
            return name
        count = parse_number(self.getvar("slot-count") or "0")
        if count < 2:
            return name
        slotted = self.getvar(f"has-slot:{name}") == "yes" or (
            self.getvar(f"partition-size:{name}") is None)
        if not slotted:
            return name
        slot = (self.getvar("current-slot") or "").strip().lstrip("_")
        if not slot:
            raise DeviceError(f"{self.spec}: {name} is slotted but current-slot is unknown")
        return f"{name}_{slot}"

    def erase(self, name: str) -> None:
        """``erase:NAME`` (the bootloader fills it with its erased value; FAIL -> FastbootFail)."""
        self.command(f"erase:{name}")

    def partition_size(self, name: str) -> int | None:
        value = self.getvar(f"partition-size:{name}")
        return parse_number(value) if value else None


@dataclass
class FlashResult:
    """What was flashed."""

    partition: str
    bytes: int
    pieces: list[int] = field(default_factory=list)     # sizes downloaded
    erased: bool = False                                # erased before flashing
    partition_type: str = ""                            # getvar partition-type (raw, ext4, ...)

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "bytes": self.bytes, "pieces": self.pieces,
                "erased": self.erased, "partition_type": self.partition_type}


def _image_range(reader: Any, names: tuple[str, ...]) -> tuple[str | None, int, int]:
    """(partition name in the image or None for the whole image, first LBA, sector count)."""
    from formats.errors import FormatError
    from formats.table import find_partition
    from imager.image.source import ImageAsSource
    from imager.table import read_table

    try:
        table = read_table(ImageAsSource(reader))
    except FormatError:
        table = None
    if table is None or not table.partitions:
        return None, 0, reader.sector_count         # the image is the partition's content
    for name in names:
        part = find_partition(table, name)
        if part is not None:
            return name, part.first_lba, part.count_sectors
    have = ", ".join(p.name for p in table.partitions)
    raise UsageError(f"no partition named {' or '.join(names)} in the image (partitions: {have})")


def flash_partition(device: FastbootDevice, reader: Any, name: str,
                    progress: Callable[[int], None] | None = None, *,
                    erase_first: bool = False) -> FlashResult:
    """Flash partition ``name`` of ``reader`` (or the whole table-less image) onto ``device``.

    ``erase_first`` erases the device's partition before the first download, so the part the
    image does not cover reads as erased rather than as the old content.

    Raises:
        TargetRefused: the content is larger than the device's partition.
        FastbootFail: the device refused (its FAIL text in the message).
    """
    from imager.image.sparse_export import write_simg

    target = device.resolve(name)
    if device.getvar(f"is-logical:{target}") == "yes" and device.getvar("is-userspace") != "yes":
        raise TargetRefused(f"{device.spec}: {target} is a logical partition (inside super); "
                            "the bootloader cannot flash it: reboot into fastbootd first")
    image_name, _lo, count = _image_range(reader, (name, target))
    size = count * reader.sector_size
    limit = device.partition_size(target)
    if limit is not None and size > limit:
        raise TargetRefused(f"{device.spec}: partition {target} is {limit} bytes, the image's "
                            f"{image_name or 'content'} is {size}")
    block = 4096 if size % 4096 == 0 else reader.sector_size
    result = FlashResult(target, size,
                         partition_type=device.getvar(f"partition-type:{target}") or "")
    if erase_first:
        device.erase(target)
        result.erased = True
    with tempfile.TemporaryDirectory(prefix="imager-fastboot-") as tmp:
        paths = write_simg(reader, os.path.join(tmp, "part.simg"), partition=image_name,
                           max_size=device.max_download_size, block_size=block)
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            device.download(data)
            device.command(f"flash:{target}")
            result.pieces.append(len(data))
            if progress is not None:
                progress(len(data))
    return result


def open_source(rest: str, sector_size: int | None = None, **opts: Any) -> Any:
    """fastboot cannot read partitions: use edl: or usb-msc: to acquire."""
    raise UsageError("fastboot: cannot read a phone's storage (fastboot has no read command); "
                     "acquire through edl: or usb-msc: instead")


def open_target(rest: str, sector_size: int | None = None, **opts: Any) -> FastbootDevice:
    """``fastboot:[LOCATOR]``: a device to flash partitions onto (restore --partition NAME)."""
    return FastbootDevice(rest, int(opts.get("timeout_ms", DEFAULT_TIMEOUT_MS)))
