"""imager rescue killed (SIGKILL) in each phase, and a source that vanishes and comes back.

Slow sectors stretch each phase so the test can act inside it: the mapfile's status line says
which phase is running (it is saved on every phase change).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from formats.errors import FormatError
from formats.mapfile import parse_mapfile
from tests.conftest import REPO, have_root
from tests.rescue_support import assert_rescued, imager

pytestmark = pytest.mark.skipif(not have_root() or not os.path.exists("/dev/fuse"),
                                reason="FUSE and loop devices need root and /dev/fuse")
SIZE = 1 << 20
BAD = list(range(1000, 1011))
# 5, 1500: copying; 950: trimming (inside the failed cluster); 1005: scraping and retrying
SLOW_IN = {"?": {5: 0.4, 1500: 0.4}, "*": {950: 0.4}, "/": {1005: 0.4}, "-": {1005: 0.4}}
SLOW = SLOW_IN["*"]


def start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imager", "rescue", *map(str, args),
                             "--no-progress", "--save-interval", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_phase(proc: subprocess.Popen, mapfile: Path, phase: str, timeout: float = 30) -> None:
    """Block until the saved mapfile's status line shows ``phase`` (while ``proc`` runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rescue ended before phase {phase!r}: {proc.stderr.read()}"
        try:
            if parse_mapfile(mapfile.read_bytes()).current_status == phase:
                return
        except (FileNotFoundError, FormatError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"phase {phase!r} not reached in {timeout} s")


@pytest.mark.parametrize("phase", ["?", "*", "/", "-"])
def test_kill_9_in_each_phase_then_rerun_gives_the_same_result(tmp_path: Path,
                                                                phase: str) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW_IN[phase], loop=True) as dev:
        args = (dev.source, out, "--mapfile", mapfile, "--retries", "2")
        proc = start(*args)
        try:
            wait_phase(proc, mapfile, phase)
            time.sleep(0.1)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert parse_mapfile(mapfile.read_bytes()).current_status == phase
        imager(*args)
    assert_rescued(data, out, mapfile, BAD)


@pytest.mark.parametrize("use_loop", [False, True])
def test_vanish_and_return_mid_read_resumes_and_finishes(tmp_path: Path,
                                                         use_loop: bool) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW, loop=use_loop) as dev:
        proc = start(dev.source, out, "--mapfile", mapfile, "--wait-reconnect", "30")
        try:
            wait_phase(proc, mapfile, "*")
            time.sleep(0.1)          # inside the slow read of LBA 950
            dev.vanish()
            time.sleep(1.0)
            assert proc.poll() is None  # still waiting for the device
            dev.restore()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "waiting up to 30 s" in err and "is back; continuing" in err
    assert_rescued(data, out, mapfile, BAD)


def test_vanish_without_waiting_exits_130_and_a_rerun_finishes(tmp_path: Path) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW, loop=True) as dev:
        args = (dev.source, out, "--mapfile", mapfile)
        proc = start(*args)
        try:
            wait_phase(proc, mapfile, "*")
            dev.vanish()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        assert "to resume: imager rescue" in err
        dev.restore()
        imager(*args)
    assert_rescued(data, out, mapfile, BAD)


def test_ddrescue_finishes_a_rescue_imager_was_killed_in(tmp_path: Path) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW, loop=True) as dev:
        proc = start(dev.source, out, "--mapfile", mapfile)
        try:
            wait_phase(proc, mapfile, "*")
        finally:
            proc.kill()
            proc.wait()
        subprocess.run(["ddrescue", "-q", "-d", "-b512", dev.source, str(out), str(mapfile)],
                       check=True, capture_output=True, timeout=120)
    assert_rescued(data, out, mapfile, BAD)


def test_imager_finishes_a_rescue_ddrescue_was_stopped_in(tmp_path: Path) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW, loop=True) as dev:
        proc = subprocess.Popen(["ddrescue", "-q", "-d", "-b512", dev.source, str(out),
                                 str(mapfile)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while dev.stats()["reads"] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)  # ddrescue saves its mapfile on SIGINT
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        status = parse_mapfile(mapfile.read_bytes())
        assert status.current_status != "+"  # stopped mid-rescue
        imager(dev.source, out, "--mapfile", mapfile)
    assert_rescued(data, out, mapfile, BAD)


def test_sigterm_saves_state_and_exits_130(tmp_path: Path) -> None:
    data = make_image(tmp_path / "disk.img", SIZE)
    out, mapfile = tmp_path / "out.raw", tmp_path / "map"
    with faulty_device(tmp_path / "disk.img", bad=BAD, slow=SLOW, loop=True) as dev:
        args = (dev.source, out, "--mapfile", mapfile)
        proc = subprocess.Popen([sys.executable, "-m", "imager", "rescue", *map(str, args),
                                 "--no-progress"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while dev.stats()["reads"] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        assert "state saved in" in err and "to resume: imager rescue" in err
        assert parse_mapfile(mapfile.read_bytes()).current_status == "?"
        imager(*args)
    assert_rescued(data, out, mapfile, BAD)
