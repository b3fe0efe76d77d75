"""A stream (adb exec-out) that dies early: keep what arrived, say the rest was not read."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need_tool

SIZE = 8 << 20
DELIVERED = 5 * (1 << 20) + 3 * 512 + 100  # dies mid-chunk and mid-sector


def test_short_stream_keeps_every_whole_sector_and_records_the_rest_unread(tmp_path: Path) -> None:
    need_tool("zstd")
    data = random.Random(9).randbytes(SIZE)
    image = tmp_path / "s.imgz"
    proc = subprocess.run([sys.executable, "-m", "imager", "acquire", "-", str(image),
                           "--size", str(SIZE), "--quiet", "--chunk-size", "1M"],
                          check=False, input=data[:DELIVERED], capture_output=True, cwd=REPO)
    assert proc.returncode == 1
    err = proc.stderr.decode().strip().splitlines()
    assert err[-1].startswith("imager: error: the stream ended after")
    kept = DELIVERED - DELIVERED % 512
    assert f"ended after {kept} of {SIZE} bytes" in err[-1]
    raw = subprocess.run(["zstd", "-d", "-c", str(image)], check=True,
                         capture_output=True).stdout
    assert raw == data[:kept] + bytes(SIZE - kept)  # stock zstd: what arrived, then zeros
    show = subprocess.run([sys.executable, "-m", "imager", "show", str(image), "--json"],
                          check=True, capture_output=True, cwd=REPO).stdout.decode()
    assert json.loads(show)["unread"] == [[kept // 512, (SIZE - kept) // 512]]
    verify = subprocess.run([sys.executable, "-m", "imager", "verify", str(image)],
                            check=False, capture_output=True, cwd=REPO)
    assert verify.returncode == 0, verify.stderr  # the image itself is whole and consistent
