"""The repository lock: one writer at a time, and a stale lock is recognised as such.

The lock is a file created with O_EXCL holding the holder's pid, host, boot id, time and
command. A second process is refused with a message naming the holder. A lock whose holder is
provably dead (same host and boot, no such pid; or same host, another boot) is *stale*: it is
reported as such and broken only when the user asks (``--break-lock``), because a lock taken on
another host cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imager.errors import ImagerError

log = logging.getLogger(__name__)
LOCK_NAME = "lock"


class RepositoryLocked(ImagerError):
    """Another process holds (or held, if ``stale``) the repository lock."""

    def __init__(self, message: str, holder: dict[str, Any], stale: bool) -> None:
        super().__init__(message)
        self.holder, self.stale = holder, stale


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """True only when the holder can be proven dead from this host."""
    if holder.get("host") != socket.gethostname():
        return False
    boot = holder.get("boot_id", "")
    if boot and boot != _boot_id():
        return True
    pid = holder.get("pid")
    return isinstance(pid, int) and not _pid_alive(pid)


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-…Z (imager backup …)'."""
    when = holder.get("time_iso", "?")
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"
            f" ({holder.get('command', '?')})")


def read_holder(repo: Path) -> dict[str, Any] | None:
    """The current lock's content, ``{}`` if unreadable, None if there is no lock."""
    try:
        text = (repo / LOCK_NAME).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class RepoLock:
    """Context manager holding the exclusive lock of repository ``repo``."""

    def __init__(self, repo: Path, command: str = "", break_lock: bool = False) -> None:
        self.path = Path(repo) / LOCK_NAME
        self.command, self.break_lock = command, break_lock
        self.held = False

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RepositoryLocked: held by a live (or unverifiable) process, or stale without
                ``break_lock``.
        """
        for _ in range(3):
            if self._try_create():
                return
            holder = read_holder(self.path.parent)
            if holder is None:
                continue  # released between our attempt and the read: try again
            self._refuse_or_break(holder)
        raise RepositoryLocked(f"{self.path}: could not take the lock (contended)", {}, False)

    def _try_create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                "time": time.time(), "command": self.command,
                "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.held = True
        return True

    def _refuse_or_break(self, holder: dict[str, Any]) -> None:
        if not holder:
            if self.break_lock:
                self.path.unlink(missing_ok=True)
                return
            raise RepositoryLocked(
                f"repository {self.path.parent} has an unreadable lock file {self.path} (a crash "
                "while locking?); check nothing else uses the repository, then use --break-lock",
                holder, True)
        stale = holder_is_dead(holder)
        if self.break_lock and (stale or holder.get("host") != socket.gethostname()):
            log.warning("breaking the lock of %s: %s", self.path.parent, describe(holder))
            self.path.unlink(missing_ok=True)
            return
        if stale:
            raise RepositoryLocked(
                f"repository {self.path.parent} has a stale lock: {describe(holder)} is no longer "
                "running; check nothing else uses the repository, then run again with --break-lock",
                holder, True)
        raise RepositoryLocked(
            f"repository {self.path.parent} is locked by {describe(holder)}; wait for it to finish"
            + ("" if holder.get("host") == socket.gethostname() else
               " (another host: use --break-lock only if you are sure it is not running)"),
            holder, False)

    def release(self) -> None:
        """Remove the lock if we hold it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


@contextlib.contextmanager
def locked(repo: Path | str, command: str = "", break_lock: bool = False) -> Iterator[RepoLock]:
    """Hold the repository's exclusive lock for the ``with`` block."""
    lock = RepoLock(Path(repo), command, break_lock)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
