"""Kill a restore (SIGKILL), re-run it: it continues from the journal and ends identical."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from imager.devices.file import FileTarget
from imager.restore import restore
from imager.restore_plan import build_plan
from tests.conftest import REPO
from tests.restore_support import ChunkedFileReader, MiB, sha256_file

KILLER = """
import os, signal, sys
from imager.devices.file import FileTarget
from imager.restore import restore
from imager.restore_plan import build_plan
from tests.restore_support import ChunkedFileReader
src, dst, journal, kill_after = sys.argv[1:]
reader, target = ChunkedFileReader(src), FileTarget(dst)
calls = [0]
def progress(nbytes):
    calls[0] += 1
    if calls[0] == int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)
restore(reader, target, build_plan(reader, target), progress=progress, journal_path=journal,
        batch_bytes=1 << 20)
"""


def make_source(path: Path, seed: int = 7) -> Path:
    import hashlib

    block = b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(2048))
    path.write_bytes(block * 96 + bytes(MiB))  # 6 MiB of data, then a zero MiB
    return path


def kill_midway(src: Path, dst: Path, journal: Path, after: int) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, str(src), str(dst), str(journal),
                           str(after)], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def resume(src: Path, dst: Path, journal: Path):
    reader, target = ChunkedFileReader(src), FileTarget(str(dst))
    try:
        return restore(reader, target, build_plan(reader, target), journal_path=journal,
                       batch_bytes=MiB)
    finally:
        target.close()
        reader.close()


def test_killed_restore_resumes_from_the_journal_and_ends_identical(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.img")
    dst, journal = tmp_path / "dst.img", tmp_path / "dst.journal"
    dst.write_bytes(b"\xee" * src.stat().st_size)
    kill_midway(src, dst, journal, after=9)  # 14 chunks of 512 KiB; killed after the 9th
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    committed = max(x.get("committed", 0) for x in lines)
    assert 0 < committed < 14
    result = resume(src, dst, journal)
    assert result.resumed_at_step == committed
    assert result.steps_written == result.steps_total - committed
    assert sha256_file(dst) == sha256_file(src)
    assert not journal.exists()


def test_journal_of_another_image_is_not_trusted(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.img")
    dst, journal = tmp_path / "dst.img", tmp_path / "dst.journal"
    dst.write_bytes(b"\xee" * src.stat().st_size)
    kill_midway(src, dst, journal, after=9)
    other = make_source(tmp_path / "src.img", seed=8)  # same path, new content
    result = resume(other, dst, journal)
    assert result.resumed_at_step == 0
    assert sha256_file(dst) == sha256_file(other)


def test_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.img")
    dst, journal = tmp_path / "dst.img", tmp_path / "dst.journal"
    dst.write_bytes(b"\xee" * src.stat().st_size)
    kill_midway(src, dst, journal, after=9)
    with open(journal, "a") as f:
        f.write('{"committed": 1')  # a crash in the middle of a journal write
    result = resume(src, dst, journal)
    assert result.resumed_at_step > 0
    assert sha256_file(dst) == sha256_file(src)


def test_file_target_journal_lives_beside_it(tmp_path: Path) -> None:
    from imager.restore_journal import default_journal_path

    target = FileTarget(str(make_source(tmp_path / "t.img")))
    try:
        assert default_journal_path(target.identity) == Path(str(tmp_path / "t.img") +
                                                             ".imager-restore")
    finally:
        target.close()


def test_ctrl_c_commits_the_journal_and_raises_interrupted(tmp_path: Path) -> None:
    import pytest

    from imager.errors import Interrupted

    src = make_source(tmp_path / "src.img")
    dst, journal = tmp_path / "dst.img", tmp_path / "dst.journal"
    dst.write_bytes(b"\xee" * src.stat().st_size)
    calls = []

    def progress(nbytes: int) -> None:
        calls.append(nbytes)
        if len(calls) == 5:
            raise KeyboardInterrupt

    reader, target = ChunkedFileReader(src), FileTarget(str(dst))
    with pytest.raises(Interrupted) as info:
        restore(reader, target, build_plan(reader, target), progress=progress,
                journal_path=journal, batch_bytes=64 * MiB)
    target.close()
    reader.close()
    assert info.value.exit_code == 130 and "step 5 of 14" in str(info.value)
    result = resume(src, dst, journal)
    assert result.resumed_at_step == 5
    assert sha256_file(dst) == sha256_file(src)


CLI_KILLER = """
import os, signal, sys
import imager.restore as r
from imager.cli import main
r.restore.__kwdefaults__["batch_bytes"] = 1 << 20  # commit every 2 chunks on a small image
real_do, calls = r._Writer._do, [0]
def do(self, *args):
    calls[0] += 1
    if calls[0] == 9:
        os.kill(os.getpid(), signal.SIGKILL)
    real_do(self, *args)
r._Writer._do = do
main(["restore", sys.argv[1], sys.argv[2], "--yes", "-q"])
"""


def test_cli_restore_killed_and_rerun_continues(tmp_path: Path, capsys) -> None:
    from imager.cli import main

    src = make_source(tmp_path / "src.img")
    native = tmp_path / "src.native"
    assert main(["acquire", str(src), str(native), "--quiet", "--chunk-size", "512K"]) == 0
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\xee" * src.stat().st_size)
    proc = subprocess.run([sys.executable, "-c", CLI_KILLER, str(native), str(dst)], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    journal = Path(str(dst) + ".imager-restore")
    assert journal.exists() and dst.read_bytes() != src.read_bytes()
    capsys.readouterr()
    assert main(["restore", str(native), str(dst), "--yes", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["resumed_at_step"] < summary["steps_total"]
    assert sha256_file(dst) == sha256_file(src) and not journal.exists()
