"""Resume after kill -9 (and Ctrl-C) at several points: the result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.acquire_support import (
    cli,
    file_sha256,
    run_cli,
    show_json,
    small_source,
    tool_hash,
    zstd_d_sha256,
)

ARGS = ("--quiet", "--chunk-size", "256K", "--hash", "md5,sha1,sha256", "--case", "R-1")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 MiB + 5 sectors: 97 chunks of 256 KiB (the last one short)."""
    return small_source(tmp_path_factory.mktemp("src") / "src.img", mib=24)


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The manifest of an uninterrupted run (hashes, chunk kinds and checks)."""
    image = tmp_path_factory.mktemp("ref") / "ref.imgz"
    code, _, err = cli("acquire", str(source), str(image), *ARGS)
    assert code == 0, err
    ref = show_json(image)
    assert ref["hashes"] == {"sha256": tool_hash("sha256sum", source),
                             "md5": tool_hash("md5sum", source),
                             "sha1": tool_hash("sha1sum", source)}
    return ref


def same_result(image: Path, ref: dict) -> None:
    got = show_json(image)
    for key in ("hashes", "chunk_runs", "chunk_kinds", "unread", "not_acquired", "case"):
        assert got[key] == ref[key], key
    code, out, _ = cli("verify", "--quiet", "--json", str(image))
    assert code == 0 and json.loads(out)["ok"]
    assert zstd_d_sha256(image) == ref["hashes"]["sha256"]


@pytest.mark.parametrize("point", ["chunk:20", "journal:32", "torn:50", "chunk:96",
                                   "finalize:1", "finalize:2"])
def test_kill_9_then_rerun_equals_uninterrupted(point: str, source: Path, reference: dict,
                                                tmp_path: Path) -> None:
    image = tmp_path / "img.imgz"
    killed = run_cli("acquire", str(source), str(image), *ARGS, env={"IMAGER_TEST_KILL": point})
    assert killed.returncode == -9, killed.stderr
    assert os.path.exists(str(image) + ".journal")
    again = run_cli("acquire", str(source), str(image), *ARGS)
    assert again.returncode == 0, again.stderr
    assert not os.path.exists(str(image) + ".journal")
    same_result(image, reference)


def test_ctrl_c_twice_then_resume_flag(source: Path, reference: dict, tmp_path: Path) -> None:
    image = tmp_path / "img.imgz"
    for point in ("chunk:30:int", "chunk:70:int"):
        stopped = run_cli("acquire", str(source), str(image), *ARGS,
                          env={"IMAGER_TEST_KILL": point})
        assert stopped.returncode == 130, stopped.stderr
        assert b"to resume: imager acquire" in stopped.stderr and b"--resume" in stopped.stderr
    code, _, err = cli("acquire", str(source), str(image), *ARGS, "--resume")
    assert code == 0, err
    same_result(image, reference)


def test_raw_format_resumes_too(source: Path, tmp_path: Path) -> None:
    image = tmp_path / "img.raw"
    args = ("--format", "raw", "--quiet", "--chunk-size", "256K")
    killed = run_cli("acquire", str(source), str(image), *args, env={"IMAGER_TEST_KILL": "journal:48"})
    assert killed.returncode == -9
    assert cli("acquire", str(source), str(image), *args)[0] == 0
    assert file_sha256(image) == tool_hash("sha256sum", source)
    assert show_json(image)["hashes"]["sha256"] == tool_hash("sha256sum", source)


def test_changed_options_or_other_source_are_refused(tmp_path: Path) -> None:
    src = small_source(tmp_path / "a.img", mib=40)
    image = tmp_path / "img.imgz"
    killed = run_cli("acquire", str(src), str(image), "--quiet", "--chunk-size", "1M",
                     env={"IMAGER_TEST_KILL": "chunk:20"})
    assert killed.returncode == -9
    journal = Path(str(image) + ".journal").read_bytes()

    code, _, err = cli("acquire", str(src), str(image), "--quiet", "--chunk-size", "1M",
                       "--level", "9")
    assert code == 2 and "options differ" in err and "level" in err

    other = small_source(tmp_path / "b.img", seed=8, mib=41)   # another size
    code, _, err = cli("acquire", str(other), str(image), "--quiet", "--chunk-size", "1M")
    assert code == 2 and "another source" in err

    same_size = tmp_path / "c.img"
    shutil.copyfile(src, same_size)
    with open(same_size, "r+b") as f:               # differs inside the last committed chunk
        f.seek(15 * (1 << 20) + 4096)
        f.write(b"changed")
    code, _, err = cli("acquire", str(same_size), str(image), "--quiet", "--chunk-size", "1M")
    assert code == 2 and "reads differently" in err
    assert Path(str(image) + ".journal").read_bytes() == journal  # refusals change nothing

    assert cli("acquire", str(src), str(image), "--quiet", "--chunk-size", "1M")[0] == 0
    assert zstd_d_sha256(image) == file_sha256(src)


def test_existing_image_and_missing_journal_are_refused(tmp_path: Path) -> None:
    src = small_source(tmp_path / "a.img", mib=2)
    image = tmp_path / "img.imgz"
    code, _, err = cli("acquire", str(src), str(image), "--quiet", "--resume")
    assert code == 2 and "nothing" not in err and "no interrupted acquisition" in err
    assert cli("acquire", str(src), str(image), "--quiet")[0] == 0
    code, _, err = cli("acquire", str(src), str(image), "--quiet")
    assert code == 2 and "already exists" in err


def test_kill_9_at_random_moments(source: Path, reference: dict, tmp_path: Path) -> None:
    """SIGKILL at seeded random times (startup, mid-run, finalization, or after the end)."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    rng = random.Random(23)
    image = tmp_path / "img.imgz"
    cmd = [sys.executable, "-m", "imager", "acquire", str(source), str(image), *ARGS]
    finished = False
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 0.9))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode == 0:
            finished = True
            break
        assert proc.returncode == -9, err
    if not finished:
        code, _, err = cli("acquire", str(source), str(image), *ARGS)
        assert code == 0, err
    same_result(image, reference)
