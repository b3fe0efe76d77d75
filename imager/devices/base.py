"""The Source/Target protocol and the base every backend builds on.

Backends implement only the raw primitives (``_read``, ``_write``); the base handles bounds,
transfer-size splitting and error mapping so every backend behaves alike.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from imager.errors import DeviceGone, NotSupported, OutOfBounds, ReadError, WriteError

GONE_ERRNOS = frozenset({errno_mod.ENODEV, errno_mod.ENXIO, errno_mod.ENOMEDIUM})


@dataclass(frozen=True)
class Identity:
    """What makes this device *this* device. Compared on resume and before restore."""

    kind: str                      # "file", "block", "stdin", "usb-msc", "edl", ...
    path: str                      # what the user named: a path, "-", "usb-msc:05c6:9008"
    size_bytes: int
    sector_size: int
    model: str = ""
    serial: str = ""
    disk_guid: str = ""            # GPT disk GUID when known
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        return cls(**data)

    def same_device(self, other: Identity) -> bool:
        """True when ``other`` is plausibly the same physical device (path may differ)."""
        if (self.size_bytes, self.sector_size) != (other.size_bytes, other.sector_size):
            return False
        for name in ("serial", "model", "disk_guid"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine and theirs and mine != theirs:
                return False
        return True


@runtime_checkable
class Source(Protocol):
    """Anything that yields sectors."""

    sector_size: int
    sector_count: int
    identity: Identity

    def read(self, lba: int, count: int) -> bytes:
        """Exactly ``count * sector_size`` bytes, or a DeviceError naming the failed LBA."""

    def close(self) -> None: ...


@runtime_checkable
class Target(Source, Protocol):
    """A Source that can also be written."""

    def write(self, lba: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


class BaseSource:
    """Bounds checks, splitting into ``max_transfer_sectors`` pieces and OSError mapping."""

    max_transfer_sectors = 1 << 16

    def __init__(self, sector_size: int, sector_count: int, identity: Identity) -> None:
        if sector_size <= 0 or sector_size % 512:
            raise ValueError(f"sector size {sector_size} is not a positive multiple of 512")
        self.sector_size = sector_size
        self.sector_count = sector_count
        self.identity = identity
        self.readonly = True

    @property
    def size_bytes(self) -> int:
        return self.sector_size * self.sector_count

    def _check(self, lba: int, count: int) -> None:
        if lba < 0 or count < 0 or lba + count > self.sector_count:
            raise OutOfBounds(lba, count, self.sector_count)

    def read(self, lba: int, count: int) -> bytes:
        """Read ``count`` sectors from ``lba``.

        Raises:
            OutOfBounds: the range is not on the device.
            ReadError: the device failed to deliver (``err.lba`` is the first failed piece).
            DeviceGone: the device disappeared.
        """
        self._check(lba, count)
        if count == 0:
            return b""
        parts = []
        step = self.max_transfer_sectors
        for start in range(lba, lba + count, step):
            n = min(step, lba + count - start)
            parts.append(self._read_checked(start, n))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_checked(self, lba: int, count: int) -> bytes:
        try:
            data = self._read(lba, count)
        except OSError as err:
            if err.errno in GONE_ERRNOS:
                raise DeviceGone(f"{self.identity.path}: device gone ({err.strerror})") from err
            raise ReadError(lba, count, err.strerror or str(err), err.errno) from err
        if len(data) != count * self.sector_size:
            raise ReadError(lba, count, f"short read: {len(data)} of {count * self.sector_size} bytes")
        return data

    def _read(self, lba: int, count: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device. Safe to call twice."""

    def __enter__(self) -> BaseSource:  # noqa: PYI034 -- Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BaseTarget(BaseSource):
    """A writable device; ``discard``/``zero_out`` are optional fast paths."""

    def __init__(self, sector_size: int, sector_count: int, identity: Identity) -> None:
        super().__init__(sector_size, sector_count, identity)
        self.readonly = False

    def write(self, lba: int, data: bytes) -> None:
        """Write whole sectors at ``lba``.

        Raises:
            ValueError: ``data`` is not a whole number of sectors.
            OutOfBounds, WriteError, DeviceGone.
        """
        if len(data) % self.sector_size:
            raise ValueError(f"{len(data)} bytes is not a whole number of {self.sector_size}-byte sectors")
        count = len(data) // self.sector_size
        self._check(lba, count)
        view = memoryview(data)
        step = self.max_transfer_sectors
        for start in range(lba, lba + count, step):
            n = min(step, lba + count - start)
            off = (start - lba) * self.sector_size
            self._write_checked(start, view[off:off + n * self.sector_size])

    def _write_checked(self, lba: int, data: memoryview) -> None:
        try:
            self._write(lba, data)
        except OSError as err:
            if err.errno in GONE_ERRNOS:
                raise DeviceGone(f"{self.identity.path}: device gone ({err.strerror})") from err
            raise WriteError(lba, len(data) // self.sector_size, err.strerror or str(err),
                             err.errno) from err

    def _write(self, lba: int, data: memoryview) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make every completed write durable."""

    def discard(self, lba: int, count: int) -> bool:
        """Discard sectors; True only when the device guarantees they now read as zeros."""
        raise NotSupported(f"{self.identity.kind} cannot discard")

    def zero_out(self, lba: int, count: int) -> None:
        """Make sectors read as zeros without sending zero-filled buffers."""
        raise NotSupported(f"{self.identity.kind} cannot zero out")
