"""QA regressions: hostile input through the CLI gives ONE readable line, the right exit code, no
traceback and no "internal error", and leaves nothing behind.

Expected values come from construction (the paths and sizes made here), from the team rules
(exit 2 for bad input or usage) and from sgdisk (the hostile partition names are written by it).
Every run is a real ``python -m imager`` process, so argparse and the top-level handler are
exercised exactly as a user meets them.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import tables
from tests.conftest import need_tool

REPO = Path(__file__).resolve().parent.parent


def imager(*argv: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "imager", *map(str, argv)], cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(err: str) -> str:
    """The stderr of a refused run: exactly one line, an 'error:' line, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "internal error" not in lines[0], err
    assert "Traceback" not in err and "\x1b" not in err
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("sgdisk")
    return tables.make_small_gpt(tmp_path_factory.mktemp("qa"))


@pytest.fixture(scope="module")
def small_image(small: Path) -> Path:
    image = small.with_suffix(".imgz")
    rc, _, err = imager("acquire", small, image, "--quiet")
    assert rc == 0, err
    return image


# -- empty and missing inputs ------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ("verify", "{zero}"), ("show", "{zero}"), ("report", "{zero}"), ("info", "{zero}"),
    ("extract", "{zero}", "--partition", "x", "-o", "{out}"),
    ("export", "{zero}", "{out}", "--to", "raw"),
    ("restore", "{zero}", "{out}", "--yes"),
    ("acquire", "{zero}", "{out}"),
    ("rescue", "{zero}", "{out}", "--mapfile", "{tmp}/map"),
])
def test_zero_byte_file_is_bad_input(tmp_path: Path, argv: tuple[str, ...]) -> None:
    zero = tmp_path / "zero.img"
    zero.touch()
    out = tmp_path / "out"
    args = [a.format(zero=zero, out=out, tmp=tmp_path) for a in argv]
    rc, stdout, err = imager(*args)
    assert rc == 2, (stdout, err)
    assert "0 bytes (empty)" in one_error_line(err)
    assert not out.exists() and not (tmp_path / "out.journal").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.img"]


@pytest.mark.parametrize("verb", ["acquire", "info", "rescue"])
def test_missing_source_is_bad_input(tmp_path: Path, verb: str) -> None:
    extra = {"acquire": [tmp_path / "x.imgz"],
             "rescue": [tmp_path / "x.raw", "--mapfile", tmp_path / "x.map"]}.get(verb, [])
    rc, _, err = imager(verb, tmp_path / "nonexistent", *extra)
    assert rc == 2
    assert "nonexistent: no such file or device" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


# -- outputs that cannot be written --------------------------------------------------------------


def _output_argvs(image: Path, small: Path, out: Path) -> list[list[str | Path]]:
    return [["acquire", small, out, "--quiet"],
            ["extract", image, "--partition", "rootfs", "-o", out],
            ["export", image, out, "--to", "raw"],
            ["restore", image, out, "--yes", "--quiet"],
            ["report", image, "-o", out]]


def test_output_into_missing_directory(tmp_path: Path, small: Path, small_image: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "out"
    for argv in _output_argvs(small_image, small, out):
        rc, _, err = imager(*argv)
        assert rc == 2, (argv, err)
        assert "No such file or directory" in one_error_line(err), argv


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A read-only tmpfs (a chmod'ed directory is no obstacle to root)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_output_on_read_only_file_system(tmp_path: Path, small: Path,
                                         small_image: Path) -> None:
    need_tool("mount", "umount")
    with read_only_dir(tmp_path / "ro") as ro:
        for argv in _output_argvs(small_image, small, ro / "out"):
            rc, _, err = imager(*argv)
            assert rc == 2, (argv, err)
            assert "Read-only file system" in one_error_line(err), argv


# -- option values -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "1000", "-512", "4097", "1M", "abc"])
@pytest.mark.parametrize("verb", ["acquire", "info", "rescue", "verify"])
def test_bad_sector_size_is_a_usage_error(tmp_path: Path, small: Path, small_image: Path,
                                          verb: str, value: str) -> None:
    argv: list[str | Path] = {
        "acquire": ["acquire", small, tmp_path / "x.imgz"],
        "info": ["info", small],
        "rescue": ["rescue", small, tmp_path / "x.raw", "--mapfile", tmp_path / "m"],
        "verify": ["verify", small_image, "--against", small],
    }[verb]
    rc, _, err = imager(*argv, f"--sector-size={value}")
    assert rc == 2
    assert "--sector-size" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_negative_retries_names_only_retries(tmp_path: Path, small: Path) -> None:
    rc, _, err = imager("acquire", small, tmp_path / "x.imgz", "--retries", "-1")
    line = one_error_line(err)
    assert rc == 2 and "--retries -1" in line and "--workers" not in line


def test_small_segment_size_refused_before_anything_is_written(tmp_path: Path,
                                                               small: Path) -> None:
    rc, _, err = imager("acquire", small, tmp_path / "x.e01", "--format", "e01",
                        "--segment-size", "1")
    assert rc == 2
    assert "at least 1048576" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []   # no journal left to confuse the next run


def test_usage_errors_are_one_line(small: Path) -> None:
    for argv in (["acquire"], ["bogus-verb"], ["export", small, "x", "--to", "zip"],
                 ["acquire", small, "x", "--chunk-size", "0"]):
        rc, _, err = imager(*argv)
        assert rc == 2
        assert "--help" in one_error_line(err), argv


# -- rescue onto itself ----------------------------------------------------------------------------


def test_rescue_refuses_out_or_mapfile_aliasing_the_source(tmp_path: Path, small: Path) -> None:
    source = tmp_path / "src.img"
    source.write_bytes(small.read_bytes())
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    (tmp_path / "link.img").symlink_to(source)
    for out, mapfile, what in (("./src.img", "m", "OUT ./src.img is the SOURCE"),
                               ("link.img", "m", "OUT link.img is the SOURCE"),
                               ("x.raw", "./src.img", "--mapfile src.img is the SOURCE"),
                               ("x.raw", "x.raw", "--mapfile x.raw is the OUT")):
        rc, _, err = imager("rescue", "src.img", out, "--mapfile", mapfile, "--no-progress",
                            cwd=tmp_path)
        assert rc == 2, (out, mapfile, err)
        assert what in one_error_line(err)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.img", "src.img"]


def test_garbage_mapfile_error_is_short(tmp_path: Path, small: Path) -> None:
    garbage = tmp_path / "garbage.map"
    garbage.write_bytes(b"\x00" * 100_000 + b" + 1\n")
    rc, _, err = imager("rescue", small, tmp_path / "x.raw", "--mapfile", garbage,
                        "--no-progress")
    assert rc == 2
    line = one_error_line(err)
    assert "(100000 chars)" in line and len(line) < 300


# -- hostile partition names ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("sgdisk")
    raw = tables.make_hostile_names(tmp_path_factory.mktemp("hostile"))
    image = raw.with_suffix(".imgz")
    rc, _, err = imager("acquire", raw, image, "--quiet")
    assert rc == 0, err
    return image


def test_unknown_partition_error_escapes_hostile_names(tmp_path: Path,
                                                       hostile_image: Path) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(hostile_image.with_suffix(".img").read_bytes())
    for argv in (["extract", hostile_image, "--partition", "nosuch", "-o", tmp_path / "x"],
                 ["restore", hostile_image, target, "--partition", "nosuch", "--dry-run"]):
        rc, _, err = imager(*argv)
        assert rc == 2
        line = one_error_line(err)
        # the names sgdisk wrote, escaped: the newline and ESC are visible, not acted on
        assert "evil\\nname" in line and "\\x1b[31mred\\x1b[0m" in line, line


def test_report_text_escapes_hostile_names(hostile_image: Path) -> None:
    rc, out, err = imager("report", hostile_image)
    assert rc == 0, err
    assert "\x1b" not in out
    rows = [line for line in out.splitlines() if line.startswith("  #")]
    assert [row.split()[1] for row in rows] == \
        ["evil\\nname", "\\x1b[31mred\\x1b[0m", "../../etc/passwd"]


# -- restore targets that cannot be right ----------------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
def test_restore_partition_onto_missing_file_creates_nothing(tmp_path: Path, small_image: Path,
                                                             dry_run: bool) -> None:
    target = tmp_path / "new.img"
    rc, _, err = imager("restore", small_image, target, "--partition", "rootfs", "--yes",
                        *(["--dry-run"] if dry_run else []))
    assert rc == 2
    assert "does not exist" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_restore_onto_directory_is_bad_input(tmp_path: Path, small_image: Path) -> None:
    rc, _, err = imager("restore", small_image, tmp_path, "--yes")
    assert rc == 2
    assert "is a directory" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


# -- export options a format would ignore ----------------------------------------------------------


@pytest.mark.parametrize("to", ["e01", "zst"])
def test_export_whole_image_formats_refuse_partition(tmp_path: Path, small_image: Path,
                                                     to: str) -> None:
    out = tmp_path / "out"
    rc, _, err = imager("export", small_image, out, "--to", to, "--partition", "rootfs")
    assert rc == 2
    assert "--partition is for simg" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_unknown_format_option(tmp_path: Path, small_image: Path) -> None:
    rc, _, err = imager("export", small_image, tmp_path / "out", "--to", "e01", "-O", "bogus=1")
    assert rc == 2
    assert "does not take bogus" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_rescue_refuses_an_unwritable_mapfile_before_reading(tmp_path: Path, small: Path) -> None:
    need_tool("mount", "umount")
    out = tmp_path / "out.raw"
    rc, _, err = imager("rescue", small, out, "--mapfile", tmp_path / "no" / "map",
                        "--no-progress")
    assert rc == 2 and "does not exist" in one_error_line(err)
    with read_only_dir(tmp_path / "ro") as ro:
        rc, _, err = imager("rescue", small, out, "--mapfile", ro / "map", "--no-progress")
        assert rc == 2 and "is not writable" in one_error_line(err)
    assert not out.exists()   # refused before the copy pass, not after it


def test_repeated_hash_options_all_count(tmp_path: Path, small: Path) -> None:
    need_tool("md5sum", "sha1sum")
    image = tmp_path / "x.imgz"
    rc, _, err = imager("acquire", small, image, "--hash", "md5", "--hash", "sha1", "--quiet")
    assert rc == 0, err
    rc, out, err = imager("show", image)
    assert rc == 0, err
    for tool, name in (("md5sum", "md5"), ("sha1sum", "sha1")):
        want = subprocess.run([tool, str(small)], check=True, capture_output=True,
                              text=True).stdout.split()[0]
        assert f"{name}:" in out and want in out, (name, out)


def test_interrupted_simg_acquisition_says_it_cannot_resume(tmp_path: Path, small: Path) -> None:
    """``--format simg`` is "not resumable" (acquire --help): Ctrl-C must not advise --resume,
    and running again must say so in one line instead of an internal error."""
    image = tmp_path / "x.simg"
    argv = [sys.executable, "-m", "imager", "acquire", str(small), str(image), "--format",
            "simg", "--chunk-size", "64k", "--quiet"]
    stopped = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": str(REPO), "IMAGER_TEST_KILL": "chunk:3:int"})
    assert stopped.returncode == 130, stopped.stderr
    assert "--resume" not in stopped.stderr and "cannot resume" in stopped.stderr
    for extra in ([], ["--resume"]):
        rc, _, err = imager(*argv[3:], *extra)
        assert rc == 2
        assert "cannot resume" in one_error_line(err)
