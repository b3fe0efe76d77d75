"""The resume journal of a restore: which plan steps are durably on the target.

One JSON line per record, fsynced: a header naming the plan's fingerprint, then ``committed``
lines, each written only after the target was flushed (and read back when verifying). A re-run
with the same fingerprint continues after the last committed step; a torn last line is ignored;
a journal of another plan is replaced (starting over is always correct, only slower).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from imager.devices.base import Identity
from imager.durable import write_atomic

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
STATE_DIR_ENV = "IMAGER_STATE_DIR"


def state_dir() -> Path:
    """Where journals of block-device restores live ($IMAGER_STATE_DIR, else XDG state)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "imager"


def default_journal_path(identity: Identity) -> Path:
    """Beside a file target; in the state dir for a device (named by serial or node)."""
    if identity.kind == "file":
        return Path(identity.path + ".imager-restore")
    node = str(identity.extra.get("device") or identity.path)
    # Device-provided strings are data, never path parts: keep only safe characters.
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in
                  f"{node.rsplit('/', 1)[-1]}-{identity.serial}".strip("-"))
    return state_dir() / f"restore-{tag}.journal"


class RestoreJournal:
    """Append-only, fsynced record of committed plan steps."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: str,
                 info: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.committed = self._load()
        if self.committed == 0:
            self._start(info or {})

    def _load(self) -> int:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return 0
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a crash: ignore it
                break
        if not records or records[0].get("fingerprint") != self.fingerprint:
            log.warning("%s: journal of another restore plan; starting over", self.path)
            return 0
        return max((int(r.get("committed", 0)) for r in records[1:]), default=0)

    def _start(self, info: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        head = {"imager_restore_journal": JOURNAL_VERSION, "fingerprint": self.fingerprint,
                **info}
        write_atomic(self.path, (json.dumps(head) + "\n").encode())

    def commit(self, steps_done: int) -> None:
        """Record that the first ``steps_done`` steps are durable (call after target.flush())."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"committed": steps_done}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.committed = steps_done

    def finish(self) -> None:
        """The restore completed: the journal is no longer needed."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
