"""The error tree of the I/O layer. The CLI maps each root to an exit code (DESIGN.md)."""

from __future__ import annotations


class ImagerError(Exception):
    """Root of every runtime error raised by ``imager`` (exit 1 unless a subclass says)."""

    exit_code = 1


class UsageError(ImagerError):
    """The user asked for something that cannot be done as asked (exit 2)."""

    exit_code = 2


class BadInput(ImagerError):
    """An input (image, table, mapfile, device answer) is not valid (exit 2)."""

    exit_code = 2


class VerificationFailed(ImagerError):
    """Data does not match its check values (exit 3)."""

    exit_code = 3


class Interrupted(ImagerError):
    """Stopped with a resumable state (exit 130); ``resume_hint`` says how to continue."""

    exit_code = 130

    def __init__(self, message: str, resume_hint: str = "") -> None:
        super().__init__(message)
        self.resume_hint = resume_hint


class DeviceError(ImagerError):
    """Root of errors that come from a Source or Target."""


class OutOfBounds(DeviceError):
    """A request reaches past the end of the device (a bug or a bad table, never retried)."""

    exit_code = 2

    def __init__(self, lba: int, count: int, sector_count: int) -> None:
        super().__init__(f"LBA range {lba}+{count} is outside the device (0..{sector_count - 1})")
        self.lba, self.count, self.sector_count = lba, count, sector_count


class ReadError(DeviceError):
    """Reading ``count`` sectors from ``lba`` failed (medium error, EIO)."""

    def __init__(self, lba: int, count: int, reason: str, errno: int | None = None) -> None:
        super().__init__(f"read of LBA {lba}+{count} failed: {reason}")
        self.lba, self.count, self.reason, self.errno = lba, count, reason, errno


class WriteError(DeviceError):
    """Writing at ``lba`` failed."""

    def __init__(self, lba: int, count: int, reason: str, errno: int | None = None) -> None:
        super().__init__(f"write of LBA {lba}+{count} failed: {reason}")
        self.lba, self.count, self.reason, self.errno = lba, count, reason, errno


class SourceChanged(DeviceError):
    """The source gave other bytes when the same range was read again (a live, changing
    source): what was acquired would not be one consistent copy."""


class DeviceGone(DeviceError):
    """The device disappeared (ENODEV/ENXIO, USB unplugged)."""


class NotSupported(DeviceError):
    """The backend has no such operation (e.g. discard on a file)."""


class TargetRefused(ImagerError):
    """A pre-flight safety check refused the target (exit 2)."""

    exit_code = 2


class TransportError(DeviceError):
    """A USB transfer failed (added for the USB transport; ``endpoint`` when known)."""

    def __init__(self, message: str, endpoint: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class TransportTimeout(TransportError):
    """A USB transfer on ``endpoint`` got no answer within ``ms`` milliseconds."""

    def __init__(self, endpoint: int, ms: int, what: str = "") -> None:
        where = f" ({what})" if what else ""
        super().__init__(f"USB endpoint {endpoint:#04x}: no answer within {ms} ms{where}",
                         endpoint)
        self.ms = ms


class TransportStall(TransportError):
    """A USB endpoint answered STALL (halted pipe)."""

    def __init__(self, endpoint: int, what: str = "") -> None:
        where = f" ({what})" if what else ""
        super().__init__(f"USB endpoint {endpoint:#04x} stalled{where}", endpoint)


class ProtocolError(TransportError):
    """A device broke its wire protocol (e.g. a malformed or mismatched CSW)."""
