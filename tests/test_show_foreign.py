"""`imager show` on an E01 made by ewfacquire tells what the set records about itself."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest

from imager.cli import main
from tests.conftest import need_tool


def test_show_of_an_ewfacquire_set_prints_its_case_data_and_stored_md5(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("ewfacquire")
    data = random.Random(5).randbytes(1 << 20)
    (tmp_path / "src.raw").write_bytes(data)
    subprocess.run(["ewfacquire", "-u", "-t", str(tmp_path / "out"), "-C", "CASE-42",
                    "-E", "EV-7", "-e", "examiner bob", "-N", "seized phone", "-D", "a phone",
                    "-c", "deflate:fast", str(tmp_path / "src.raw")],
                   check=True, capture_output=True)
    assert main(["show", str(tmp_path / "out.E01")]) == 0
    out = capsys.readouterr().out
    assert "case:         'CASE-42'" in out
    assert "evidence:     'EV-7'" in out
    assert "examiner:     'examiner bob'" in out
    assert "notes:        'seized phone'" in out
    assert f"md5:          {hashlib.md5(data).hexdigest()} (stored in the image)" in out
    assert "manifest:     none" not in out
