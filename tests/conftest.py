"""Shared test helpers: root/tool availability and loop devices."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


def have_root() -> bool:
    return os.geteuid() == 0


def need_tool(*names: str) -> None:
    """Fail (not skip) when a required oracle tool is missing: .ci/run installs them all."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"oracle tool(s) not installed: {', '.join(missing)} (run .ci/run)")


@contextlib.contextmanager
def loop_device(image: Path, sector_size: int = 512, readonly: bool = False) -> Iterator[str]:
    """Attach ``image`` to a free loop device; detach afterwards."""
    if not have_root():
        pytest.skip("loop devices need root")
    cmd = ["losetup", "--find", "--show", "--sector-size", str(sector_size)]
    if readonly:
        cmd.append("--read-only")
    dev = subprocess.run(cmd + [str(image)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def loop() -> object:
    """The ``loop_device`` context manager, as a fixture."""
    return loop_device


@pytest.fixture
def bus() -> Iterator[object]:
    """An emulated USB bus (fixtures/usbemu) that imager's USB transport uses for the test."""
    from fixtures.usbemu import EmuBackend
    from imager.devices.usb import transport

    backend = EmuBackend()
    transport.set_backend(backend)
    try:
        yield backend
    finally:
        transport.set_backend(None)


@pytest.fixture
def ufs(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> list[Path]:
    """A fresh copy of the six LUN files of the emulated UFS phone, for each test."""
    from tests.edl_support import ufs_master

    return [Path(shutil.copy(p, tmp_path / p.name)) for p in ufs_master(tmp_path_factory)]


@pytest.fixture
def loader(tmp_path: Path) -> Path:
    """A programmer file for the emulated EDL phone to accept."""
    from tests.edl_support import make_loader

    return make_loader(tmp_path)
