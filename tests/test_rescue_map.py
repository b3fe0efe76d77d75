"""The rescue state file: atomic saves, a backup of the previous state, fallback to it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from formats.errors import FormatError
from formats.mapfile import Status
from imager.errors import BadInput
from imager.rescue_map import RescueMap
from tests.conftest import need_tool


def test_save_keeps_the_previous_state_as_bak(tmp_path: Path) -> None:
    path = tmp_path / "map"
    state = RescueMap.load(path, 4096, 512)
    state.mark(0, 1024, Status.FINISHED)
    state.save(path)
    first = path.read_text()
    state.mark(1024, 512, Status.BAD_SECTOR)
    state.save(path)
    assert (tmp_path / "map.bak").read_text() == first
    assert not (tmp_path / "map.tmp").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no leftovers
    need_tool("ddrescuelog")
    listed = subprocess.run(["ddrescuelog", "-b512", "-l-", str(path)], check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == ["2"]


def test_damaged_map_falls_back_to_bak_and_missing_map_too(tmp_path: Path) -> None:
    path = tmp_path / "map"
    state = RescueMap.load(path, 4096, 512)
    state.mark(0, 512, Status.FINISHED)
    state.save(path)
    state.save(path)  # map.bak now holds the same good state
    path.write_text("0 ?\n0 512 +\n0 512 +\n")  # torn/garbled
    assert RescueMap.load(path, 4096, 512).blocks[0].status is Status.FINISHED
    path.unlink()
    assert RescueMap.load(path, 4096, 512).blocks[0].status is Status.FINISHED


def test_damaged_map_without_bak_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("0 ?\n0 512 +\n0 512 +\n")
    with pytest.raises(FormatError, match="line 3"):
        RescueMap.load(path, 4096, 512)


def test_undo_reverts_only_failures_since_the_last_good_read(tmp_path: Path) -> None:
    state = RescueMap.load(tmp_path / "map", 8192, 512)
    state.mark(0, 1024, Status.NON_TRIMMED)
    state.commit_failures()                       # a good read came after it: real
    state.mark(1024, 512, Status.FINISHED)
    state.mark(1536, 1024, Status.NON_TRIMMED)    # a storm starts here
    state.mark(4096, 512, Status.BAD_SECTOR)
    assert state.undo_failures() == 2
    assert [(b.pos, b.size, b.status.value) for b in state.blocks] == [
        (0, 1024, "*"), (1024, 512, "+"), (1536, 6656, "?")]


def test_mapfile_longer_than_the_source_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("0 ?\n0 8192 ?\n")
    with pytest.raises(BadInput, match="source has 4096 bytes"):
        RescueMap.load(path, 4096, 512)
