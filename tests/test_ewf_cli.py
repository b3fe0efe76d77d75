"""E01 through the command line: acquire --format e01, export --to e01, and every reading verb
(info, show, verify, export, restore) on a set made by ewfacquire.

Expected values: md5sum of the source, ewfverify/ewfexport verdicts and bytes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imager.cli import main
from tests.conftest import need_tool
from tests.ewf_support import ewfacquire, ewfexport_raw, ewfinfo, ewfverify, make_source


def md5sum(path: Path) -> str:
    need_tool("md5sum")
    return subprocess.run(["md5sum", str(path)], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def test_acquire_e01_multi_segment(tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(3 << 20) + bytes(1 << 20))
    code = main(["acquire", str(source), str(tmp_path / "ev"), "--format", "e01",
                 "--segment-size", "1M", "--quiet", "--hash", "md5,sha1", "--case", "K-1",
                 "--evidence", "E-2", "--examiner", "Kim", "--description", "tablet",
                 "--notes", "bag 4"])
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir() if re.fullmatch(r"ev\.E\d\d", p.name))
    assert names == ["ev.E01", "ev.E02", "ev.E03", "ev.E04"]
    result = ewfverify(tmp_path / "ev.E01")
    assert result.returncode == 0
    assert f"MD5 hash calculated over data:\t\t{md5sum(source)}" in result.stdout
    info = ewfinfo(tmp_path / "ev.E01")
    for text in ("Case number:\t\tK-1", "Evidence number:\tE-2", "Examiner name:\t\tKim",
                 "Description:\t\ttablet", "Notes:\t\t\tbag 4"):
        assert text in info
    assert ewfexport_raw(tmp_path / "ev.E01", tmp_path / "x") == source.read_bytes()
    assert main(["verify", str(tmp_path / "ev.E01")]) == 0
    assert (tmp_path / "ev.E01.report.txt").exists()


@pytest.mark.parametrize("chunk", ["96k", "4M"])
def test_acquire_e01_any_pipeline_chunk_size(tmp_path: Path, chunk: str) -> None:
    source = tmp_path / "disk.img"
    make_source(source, sectors=6000)              # not a whole number of EWF chunks
    assert main(["acquire", str(source), str(tmp_path / "c"), "--format", "e01", "--quiet",
                 "--chunk-size", chunk]) == 0
    assert ewfexport_raw(tmp_path / "c.E01", tmp_path / "x") == source.read_bytes()
    assert md5sum(source) in ewfverify(tmp_path / "c.E01").stdout


@pytest.mark.parametrize("kill", ["chunk:3", "chunk:70", "journal:48", "chunk:100"])
def test_interrupted_e01_resumes(tmp_path: Path, kill: str) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(3 << 20) + bytes(2 << 20) + os.urandom(3 << 20))
    argv = [sys.executable, "-m", "imager", "acquire", str(source), str(tmp_path / "ev"),
            "--format", "e01", "--quiet", "--chunk-size", "64k", "--segment-size", "1M",
            "--hash", "md5,sha1"]
    killed = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "IMAGER_TEST_KILL": kill})
    assert killed.returncode == -9
    assert ewfverify(tmp_path / "ev.E01").returncode != 0     # incomplete, and libewf says so
    again = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    result = ewfverify(tmp_path / "ev.E01")
    assert result.returncode == 0 and md5sum(source) in result.stdout
    assert ewfexport_raw(tmp_path / "ev.E01", tmp_path / "x") == source.read_bytes()
    assert not (tmp_path / "ev.E01.journal").exists()


def test_chunk_size_must_hold_whole_ewf_chunks(tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(1 << 20))
    assert main(["acquire", str(source), str(tmp_path / "ev"), "--format", "e01", "--quiet",
                 "--chunk-size", "24k"]) == 2
    assert not (tmp_path / "ev.E01").exists() and not (tmp_path / "ev.E01.journal").exists()


@pytest.fixture
def theirs(tmp_path: Path) -> tuple[Path, Path]:
    """(source, first segment) of a 3-segment set made by ewfacquire."""
    make_source(tmp_path / "src.raw", sectors=6144)
    return tmp_path / "src.raw", ewfacquire(tmp_path / "src.raw", tmp_path / "theirs",
                                            "-S", "1048576")


def test_reading_verbs_on_an_ewfacquire_set(theirs: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    source, e01 = theirs
    assert main(["verify", str(e01)]) == 0
    assert md5sum(source) in capsys.readouterr().out
    assert main(["info", str(e01)]) == 0
    assert main(["show", str(e01)]) == 0
    assert main(["export", str(e01), "--to", "raw", str(tmp_path / "back.raw")]) == 0
    assert md5sum(tmp_path / "back.raw") == md5sum(source)


def test_restore_an_ewfacquire_set(theirs: tuple[Path, Path], tmp_path: Path) -> None:
    source, e01 = theirs
    target = tmp_path / "target.img"
    assert main(["restore", str(e01), str(target), "--yes", "--quiet"]) == 0
    assert md5sum(target) == md5sum(source)


def test_export_to_e01(theirs: tuple[Path, Path], tmp_path: Path) -> None:
    source, e01 = theirs
    native = tmp_path / "n.img"
    assert main(["acquire", str(source), str(native), "--quiet", "--case", "N-5"]) == 0
    assert main(["export", str(native), "--to", "e01", str(tmp_path / "again")]) == 0
    result = ewfverify(tmp_path / "again.E01")
    assert result.returncode == 0 and md5sum(source) in result.stdout
    assert "Case number:\t\tN-5" in ewfinfo(tmp_path / "again.E01")
    assert main(["export", str(e01), "--to", "e01", str(tmp_path / "copy.E01")]) == 0
    assert ewfexport_raw(tmp_path / "copy.E01", tmp_path / "c") == source.read_bytes()


def test_verify_fails_on_a_damaged_set(theirs: tuple[Path, Path]) -> None:
    _, e01 = theirs
    raw = bytearray(e01.read_bytes())
    raw[raw.index(b"sectors\0") + 76 + 200] ^= 0x01
    e01.write_bytes(bytes(raw))
    assert main(["verify", str(e01)]) == 3
