"""Software write blocking for acquisitions: the kernel read-only flag of a block device.

Every acquisition opens its source read-only. ``write_block(path)`` additionally sets the
kernel's read-only flag (BLKROSET) on a block device for the duration, so no process on the
machine can write to it (the kernel refuses opens for writing and writes through existing
descriptors), and puts the previous value back afterwards - also after an error or Ctrl-C.
``describe_protection`` says in words what was in force, for the manifest and the report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from imager.devices.file import get_readonly_flag, set_readonly_flag
from imager.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

USB_SCHEMES = ("usb-msc:", "edl:", "fastboot:")


@dataclass(frozen=True)
class Protection:
    """What kept the source from being written during an acquisition."""

    method: str            # "blkroset", "read-only-open", "usb-read-only", "stdin"
    device: str = ""
    previous_flag: bool | None = None   # the kernel flag before we set it (blkroset only)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_protection(source: str) -> Protection:
    """The protection an acquisition of ``source`` has without ``--write-block``."""
    if source == "-":
        return Protection("stdin", "-", text="source is a stream (stdin); nothing to write to")
    if source.startswith(USB_SCHEMES):
        return Protection("usb-read-only", source,
                          text="USB source: only read commands are issued (no SCSI WRITE, no "
                               "Firehose program/erase)")
    return Protection("read-only-open", source,
                      text="source opened read-only (O_RDONLY); no kernel write block")


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def write_block(path: str) -> Iterator[Protection]:
    """Set the kernel read-only flag on block device ``path`` until the block exits.

    The previous flag value is restored on exit, whatever happened inside (exceptions and
    KeyboardInterrupt included; SIGTERM and SIGHUP are turned into KeyboardInterrupt while the
    block is held, when called from the main thread). A flag that was already set is left set.
    Only SIGKILL leaves the flag set: ``blockdev --setrw DEVICE`` clears it.

    Raises:
        UsageError: ``path`` is not a block device (a USB spec, a file or stdin).
        DeviceError: the flag cannot be read or set (needs CAP_SYS_ADMIN).
    """
    if not is_block_device(path):
        raise UsageError(f"--write-block: {path} is not a block device (files are opened "
                         "read-only anyway; USB sources never receive write commands)")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        previous = _get(fd, path)
        _set(fd, path, True)
        log.info("write block on %s (kernel read-only flag set; was %s)", path, previous)
        try:
            with _signals_interrupt():
                yield Protection("blkroset", path, previous,
                                 f"kernel read-only flag (BLKROSET) set on {path} for the "
                                 f"whole acquisition (was {'on' if previous else 'off'}), "
                                 "restored after; source opened read-only")
        finally:
            if not previous:
                _set(fd, path, False)
                log.info("write block on %s released", path)
    finally:
        os.close(fd)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt inside the block, so finally-clauses run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _get(fd: int, path: str) -> bool:
    try:
        return get_readonly_flag(fd)
    except OSError as err:
        raise DeviceError(f"{path}: cannot read the read-only flag: {err.strerror}") from err


def _set(fd: int, path: str, value: bool) -> None:
    try:
        set_readonly_flag(fd, value)
    except OSError as err:
        raise DeviceError(f"{path}: cannot {'set' if value else 'clear'} the read-only flag "
                          f"(BLKROSET needs root): {err.strerror}") from err
