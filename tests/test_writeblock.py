"""--write-block: the kernel read-only flag on a loop device, seen from another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import imager.acquisition
from imager.cli import main
from imager.devices.file import get_readonly_flag, set_readonly_flag
from imager.errors import UsageError
from imager.writeblock import describe_protection, write_block
from tests.conftest import REPO, loop_device
from tests.ewf_support import ewfverify, md5


def flag(dev: str) -> bool:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return get_readonly_flag(fd)
    finally:
        os.close(fd)


def dd_write(dev: str) -> subprocess.CompletedProcess[str]:
    """Another process tries to overwrite sector 0."""
    return subprocess.run(["dd", "if=/dev/zero", f"of={dev}", "bs=512", "count=1",
                           "conv=notrunc,fsync"], check=False, capture_output=True, text=True,
                          timeout=30)


def python_write(dev: str) -> str:
    """Another process opens O_WRONLY and writes; returns "ok" or the error."""
    code = ("import os,sys\ntry:\n fd=os.open(sys.argv[1],os.O_WRONLY)\n os.write(fd,b'x'*512)\n"
            " os.fsync(fd)\n print('ok')\nexcept OSError as e:\n print(e.strerror)")
    return subprocess.run(["python3", "-c", code, dev], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


@pytest.fixture
def disk(tmp_path: Path) -> bytes:
    data = os.urandom(4 << 20)
    (tmp_path / "disk.img").write_bytes(data)
    return data


def test_writes_fail_inside_and_work_after(tmp_path: Path, disk: bytes) -> None:
    with loop_device(tmp_path / "disk.img") as dev:
        assert not flag(dev)
        with write_block(dev) as protection:
            assert flag(dev)
            assert dd_write(dev).returncode != 0
            assert python_write(dev) != "ok"
        assert protection.method == "blkroset" and protection.previous_flag is False
        assert not flag(dev)
        assert (tmp_path / "disk.img").read_bytes() == disk     # nothing got through
        assert python_write(dev) == "ok"                        # writable again


def test_flag_restored_after_error_and_kept_when_already_set(tmp_path: Path, disk: bytes) -> None:
    with loop_device(tmp_path / "disk.img") as dev:
        with pytest.raises(KeyboardInterrupt), write_block(dev):
            raise KeyboardInterrupt
        assert not flag(dev)
        fd = os.open(dev, os.O_RDONLY)
        try:
            set_readonly_flag(fd, True)
            with write_block(dev) as protection:
                assert protection.previous_flag is True
            assert flag(dev)                                      # left as it was found
        finally:
            set_readonly_flag(fd, False)
            os.close(fd)


def test_flag_restored_after_sigterm(tmp_path: Path, disk: bytes) -> None:
    code = ("import sys, time\nfrom imager.writeblock import write_block\n"
            "with write_block(sys.argv[1]):\n print('held', flush=True)\n time.sleep(60)\n")
    with loop_device(tmp_path / "disk.img") as dev:
        proc = subprocess.Popen([sys.executable, "-c", code, dev], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            assert flag(dev)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert "KeyboardInterrupt" in (proc.stderr.read() if proc.stderr else "")
        assert not flag(dev)


def test_not_a_block_device(tmp_path: Path, disk: bytes) -> None:
    with pytest.raises(UsageError, match="not a block device"), \
            write_block(str(tmp_path / "disk.img")):
        pass
    assert describe_protection("usb-msc:05c6:9008").method == "usb-read-only"
    assert describe_protection(str(tmp_path / "disk.img")).method == "read-only-open"


def test_acquire_write_block_on_a_loop_device(tmp_path: Path, disk: bytes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_acquire = imager.acquisition.acquire

    def paused_acquire(source: Any, sink: Any, plan: Any, **kw: Any) -> Any:
        # mid-acquisition (source open, nothing finalized): another process tries to write
        seen["dd"] = dd_write(source.identity.path).returncode
        seen["python"] = python_write(source.identity.path)
        seen["flag"] = flag(source.identity.path)
        return real_acquire(source, sink, plan, **kw)

    monkeypatch.setattr(imager.acquisition, "acquire", paused_acquire)
    out = tmp_path / "blocked"
    with loop_device(tmp_path / "disk.img") as dev:
        code = main(["acquire", dev, str(out), "--format", "e01", "--write-block", "--quiet",
                     "--hash", "md5", "--examiner", "W"])
        assert code == 0
        assert seen["flag"] is True and seen["dd"] != 0 and seen["python"] != "ok"
        assert not flag(dev)                                       # restored
    assert (tmp_path / "disk.img").read_bytes() == disk
    assert md5(disk) in ewfverify(tmp_path / "blocked.E01").stdout
    report = json.loads((tmp_path / "blocked.E01.report.json").read_text())
    assert report["write_protection"]["method"] == "blkroset"
    assert report["write_protection"]["device"] == dev
    assert "BLKROSET" in (tmp_path / "blocked.E01.report.txt").read_text()
    manifest = json.loads((tmp_path / "blocked.E01.json").read_text())
    assert manifest["options"]["write_protection"]["method"] == "blkroset"
