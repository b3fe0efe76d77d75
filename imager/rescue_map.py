"""The rescue state: a ddrescue block list in memory, persisted atomically as a GNU mapfile.

Saving writes ``MAP.tmp``, fsyncs it, hard-links the previous ``MAP`` to ``MAP.bak`` and renames
the new file over ``MAP``: at every instant ``MAP`` is a complete mapfile, and ``MAP.bak`` the one
before it. The caller fsyncs the output before saving, so a mapfile never claims data that is
not durable yet. Failure marks can be undone: when a read error turns out to be the device
vanishing (an EIO storm), the sectors it marked bad go back to what they were.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from formats.errors import FormatError
from formats.mapfile import (
    Block,
    Mapfile,
    Status,
    build_mapfile,
    extend_domain,
    parse_mapfile,
    set_status,
    span,
    totals,
)
from imager import __version__
from imager.durable import write_atomic
from imager.errors import BadInput

log = logging.getLogger(__name__)


@dataclass
class RescueMap:
    """Block list (bytes) + status line, aligned to ``sector_size``."""

    size: int
    sector_size: int
    blocks: list[Block]
    phase: str = "?"
    pass_no: int = 1
    pos: int = 0
    _undo: list[list[Block]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, size: int, sector_size: int) -> RescueMap:
        """The state in ``path`` (or its ``.bak`` when ``path`` is missing or damaged)."""
        text = _read_text(path)
        bak = path.with_name(path.name + ".bak")
        if text is None:
            text = _read_text(bak)
            if text is not None:
                log.warning("%s is missing; continuing from %s", path, bak)
        if text is None:
            return cls(size, sector_size, [Block(0, size, Status.NON_TRIED)] if size else [])
        try:
            parsed = parse_mapfile(text)
        except FormatError as err:
            backup = _read_text(bak)
            if backup is None:
                raise
            log.warning("%s: %s; continuing from %s", path, err, bak)
            parsed = parse_mapfile(backup)
        return cls.from_mapfile(parsed, size, sector_size, str(path))

    @classmethod
    def from_mapfile(cls, parsed: Mapfile, size: int, sector_size: int,
                     name: str) -> RescueMap:
        if parsed.blocks and (parsed.start < 0 or parsed.end > size):
            raise BadInput(f"{name}: mapfile covers bytes {parsed.start}..{parsed.end}, but the "
                           f"source has {size} bytes (wrong source or mapfile?)")
        for b in parsed.blocks:
            if b.pos % sector_size or b.size % sector_size:
                raise BadInput(f"{name}: block {b.pos:#x}+{b.size:#x} is not aligned to the "
                               f"{sector_size}-byte sector size (made with another -b?)")
        return cls(size, sector_size, extend_domain(list(parsed.blocks), size),
                   parsed.current_status, parsed.current_pass, parsed.current_pos)

    def to_text(self, command: str = "") -> str:
        comments = [f"Mapfile. Created by imager {__version__} (GNU ddrescue format)"]
        if command:
            comments.append(f"Command line: {command}")
        return build_mapfile(Mapfile(self.pos, self.phase, self.pass_no, tuple(self.blocks)),
                             comments)

    def save(self, path: Path, command: str = "") -> None:
        """Atomically replace ``path``; the previous version becomes ``path.bak``."""
        if path.exists():
            bak_tmp = path.with_name(path.name + ".bak.tmp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(bak_tmp)
            os.link(path, bak_tmp)
            os.replace(bak_tmp, path.with_name(path.name + ".bak"))
        write_atomic(path, self.to_text(command).encode("ascii"))

    def mark(self, pos: int, size: int, status: Status) -> None:
        """Set ``[pos, pos+size)``; failure marks are remembered until ``commit_failures``."""
        if status is not Status.FINISHED:
            lo, hi = span(self.blocks, pos, pos + size)
            self._undo.append([Block(max(b.pos, pos), min(b.end, pos + size) - max(b.pos, pos),
                                     b.status) for b in self.blocks[lo:hi]])
        self.blocks = set_status(self.blocks, pos, size, status)

    def commit_failures(self) -> None:
        """A good read came after them: the failures so far were real."""
        self._undo.clear()

    def undo_failures(self) -> int:
        """Revert failure marks since the last good read; returns how many were reverted."""
        count = len(self._undo)
        for saved in reversed(self._undo):
            for b in saved:
                self.blocks = set_status(self.blocks, b.pos, b.size, b.status)
        self._undo.clear()
        return count

    def areas(self, status: Status, reverse: bool = False) -> list[tuple[int, int]]:
        """(pos, end) of the blocks in ``status`` now, in processing order."""
        out = [(b.pos, b.end) for b in self.blocks if b.status is status]
        return out[::-1] if reverse else out

    def totals(self) -> dict[Status, int]:
        return totals(self.blocks)

    def any_finished_lba(self) -> int | None:
        """Some LBA known good (to tell a dead device from a bad sector)."""
        for b in self.blocks:
            if b.status is Status.FINISHED:
                return b.pos // self.sector_size
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return None
