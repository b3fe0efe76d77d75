"""The resume journal: one JSON line per durable batch, next to the image being built.

Rule (STYLE.md 6): image data is written and fsynced *before* the journal line that describes it
is appended and fsynced, so the journal never describes data that is not durable. Each line
carries a CRC of its JSON text; a torn or corrupt last line is ignored (that batch is redone).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import zlib
from dataclasses import dataclass, field
from typing import Any

from imager.durable import fsync_parent
from imager.errors import BadInput

log = logging.getLogger(__name__)
JOURNAL_VERSION = 1
KILL_ENV = "IMAGER_TEST_KILL"  # test hook: "point:n[:int]" -> SIGKILL (or SIGINT) ourselves


def maybe_kill(point: str, n: int = 0) -> None:
    """Die by SIGKILL (or get a SIGINT, as from Ctrl-C) at a named point when the test hook
    asks for it; never set in normal use."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    if spec == f"{point}:{n}":
        log.debug("test hook: SIGKILL at %s", spec)
        os.kill(os.getpid(), signal.SIGKILL)
    elif spec == f"{point}:{n}:int":
        os.environ.pop(KILL_ENV)
        signal.raise_signal(signal.SIGINT)


def journal_path(image: str) -> str:
    """Where the journal of ``image`` lives."""
    return image + ".journal"


@dataclass
class JournalState:
    """What a journal says: its header and every committed batch, in order."""

    header: dict[str, Any]
    batches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def committed(self) -> dict[str, Any] | None:
        """The last committed batch, or None when nothing was committed."""
        return self.batches[-1] if self.batches else None


def _encode(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def _decode(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, _, text = line[:-1].partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(text):
            return None
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class Journal:
    """Append-only, fsynced JSON-lines journal."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def create(cls, path: str, header: dict[str, Any]) -> Journal:
        """Start a new journal (refuses to overwrite one)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o644)
        journal = cls(path, fd)
        journal._append(dict(header, journal=JOURNAL_VERSION))
        fsync_parent(path)
        return journal

    @classmethod
    def load(cls, path: str) -> tuple[Journal, JournalState]:
        """Open an existing journal for appending; drop a torn tail line.

        Raises:
            BadInput: the header line is unreadable.
        """
        with open(path, "rb") as f:
            lines = f.readlines()
        objs = [_decode(line) for line in lines]
        if not objs or objs[0] is None or objs[0].get("journal") != JOURNAL_VERSION:
            raise BadInput(f"{path}: not a readable imager journal (header line damaged)")
        good = 1
        while good < len(objs) and objs[good] is not None:
            good += 1
        if good < len(objs):
            log.warning("%s: ignoring %d torn/corrupt line(s) at the end", path,
                        len(objs) - good)
        keep = sum(len(line) for line in lines[:good])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        os.ftruncate(fd, keep)
        os.fsync(fd)
        state = JournalState(objs[0], [o for o in objs[1:good] if o is not None])
        return cls(path, fd), state

    def _append(self, obj: dict[str, Any]) -> None:
        data = _encode(obj)
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)

    def commit(self, batch: dict[str, Any]) -> None:
        """Append one batch line (call only after the data it describes is durable)."""
        self._append(batch)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        """Delete the journal once the image is complete."""
        self.close()
        os.unlink(self.path)
