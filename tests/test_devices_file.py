"""File, block-device and stdin backends against the shared contract."""

from __future__ import annotations

import io
import os
import random
import subprocess
from pathlib import Path

import pytest

from imager.devices import open_source, open_target
from imager.devices.file import FileSource, FileTarget
from imager.devices.stdin import StdinSource
from imager.errors import BadInput, ReadError, TargetRefused, UsageError
from tests.conftest import loop_device
from tests.contract import check_source, check_target


def make_image(path: Path, size: int, seed: int = 7) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def test_file_source_contract(tmp_path: Path) -> None:
    data = make_image(tmp_path / "d.img", 1 << 20)
    with open_source(str(tmp_path / "d.img")) as src:
        assert isinstance(src, FileSource) and src.identity.kind == "file"
        check_source(src, data)


def test_file_source_4096(tmp_path: Path) -> None:
    data = make_image(tmp_path / "d.img", 1 << 20)
    with FileSource(str(tmp_path / "d.img"), sector_size=4096) as src:
        assert src.sector_count == 256
        check_source(src, data)


def test_file_source_rejects_partial_sector(tmp_path: Path) -> None:
    (tmp_path / "odd.img").write_bytes(b"x" * 1000)
    with pytest.raises(BadInput, match="not a multiple"):
        FileSource(str(tmp_path / "odd.img"))


def test_file_source_never_opens_for_writing(tmp_path: Path) -> None:
    make_image(tmp_path / "d.img", 4096)
    os.chmod(tmp_path / "d.img", 0o444)
    with FileSource(str(tmp_path / "d.img")) as src:
        flags = int(Path(f"/proc/self/fdinfo/{src.fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY


def test_file_target_contract(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_image(path, 1 << 20)
    check_target(lambda: FileTarget(str(path)), path.read_bytes)


def test_file_target_creates_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new.img"
    with open_target(str(path), create_size=1 << 20) as t:
        assert t.sector_count == 2048
    assert path.stat().st_size == 1 << 20


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_block_source_contract(tmp_path: Path, sector_size: int) -> None:
    data = make_image(tmp_path / "d.img", 2 << 20)
    with loop_device(tmp_path / "d.img", sector_size=sector_size, readonly=True) as dev, \
            open_source(dev) as src:
        assert src.identity.kind == "block"
        assert src.sector_size == sector_size  # BLKSSZGET, not an assumption
        assert src.identity.extra["loop_backing_file"].endswith("d.img")
        check_source(src, data)


def test_block_target_contract_and_exclusive_open(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_image(path, 2 << 20)
    with loop_device(path) as dev:
        check_target(lambda: FileTarget(dev), path.read_bytes)
        holder = os.open(dev, os.O_RDONLY | os.O_EXCL)  # what a mount does to the device
        try:
            with pytest.raises(TargetRefused, match="busy"):
                FileTarget(dev)
        finally:
            os.close(holder)


def test_block_zero_out(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_image(path, 1 << 20)
    with loop_device(path) as dev, FileTarget(dev) as t:
        t.zero_out(8, 16)
        t.flush()
        assert t.read(8, 16) == bytes(16 * 512)
    subprocess.run(["sync"], check=True)
    assert path.read_bytes()[8 * 512:24 * 512] == bytes(16 * 512)


def test_stdin_source_contract() -> None:
    data = random.Random(3).randbytes(64 * 1024)
    src = StdinSource(size=len(data), stream=io.BufferedReader(io.BytesIO(data)))
    check_source(src, data, forward_only=True)


def test_stdin_source_needs_size_and_reports_short_stream() -> None:
    with pytest.raises(UsageError, match="--size"):
        StdinSource(stream=io.BytesIO(b""))
    src = StdinSource(size=4096, stream=io.BytesIO(b"\0" * 1000))
    with pytest.raises(ReadError, match="stream ended after 1000 bytes"):
        src.read(0, 8)
