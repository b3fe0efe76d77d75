"""``imager restore`` end to end: exit codes, confirmation, --dry-run, --json, refusals."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from formats.extent import Kind
from imager.cli import main
from imager.image.native import NativeReader
from tests.conftest import loop_device, need_tool
from tests.restore_support import MiB, make_gpt_image, sgdisk_parts, sha256_file


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw source image made by sgdisk/mkfs.ext4, native image of it by imager acquire)."""
    need_tool("sgdisk", "mkfs.ext4")
    work = tmp_path_factory.mktemp("restore_cli")
    raw = work / "src.img"
    make_gpt_image(raw)
    native = work / "src.native"
    assert main(["acquire", str(raw), str(native), "--quiet", "--chunk-size", "512K"]) == 0
    return raw, native


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["restore", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_restore_native_and_raw_to_a_new_file(image, tmp_path, monkeypatch, capsys):
    raw, native = image
    for name, src in (("from-native.img", native), ("from-raw.img", raw)):
        dst = tmp_path / name
        code, out, _ = cli(monkeypatch, capsys, str(src), str(dst), "--json")
        assert code == 0  # a new file overwrites nothing: no confirmation asked
        summary = json.loads(out)
        assert summary["verified"] and summary["bytes_written"] > 0
        assert summary["bytes_written"] + summary["bytes_zeroed"] + summary["bytes_skipped"] \
            == raw.stat().st_size
        assert sha256_file(dst) == sha256_file(raw)
        assert not Path(str(dst) + ".imager-restore").exists()  # journal removed when done


def test_existing_target_without_yes_and_without_answer_is_refused(image, tmp_path,
                                                                    monkeypatch, capsys):
    raw, native = image
    size = raw.stat().st_size
    dst = tmp_path / "old.img"
    old = raw.read_bytes()[:MiB] + b"\xee" * MiB + raw.read_bytes()[2 * MiB:]  # boot wiped
    dst.write_bytes(old)
    code, _, err = cli(monkeypatch, capsys, str(native), str(dst))
    assert code == 2 and "not confirmed" in err
    assert "Overwrite" in err and "bytes to write" in err and f"{size} bytes" in err
    assert "current table: gpt, 5 partitions" in err and "'userdata'" in err
    assert dst.read_bytes() == old
    code, _, err = cli(monkeypatch, capsys, str(native), str(dst), stdin="no\n")
    assert code == 2 and dst.read_bytes() == old
    code, _, _ = cli(monkeypatch, capsys, str(native), str(dst), "-q", stdin="yes\n")
    assert code == 0 and sha256_file(dst) == sha256_file(raw)


def test_dry_run_prints_the_plan_and_writes_nothing(image, tmp_path, monkeypatch, capsys):
    raw, native = image
    data = raw.read_bytes()
    chunk = 1024 * 512  # --chunk-size 512K
    zero_bytes = sum(chunk for i in range(0, len(data), chunk)
                     if data[i:i + chunk].count(0) == chunk)
    missing = tmp_path / "missing.img"
    code, out, _ = cli(monkeypatch, capsys, str(native), str(missing), "--dry-run", "--json")
    assert code == 0 and not missing.exists()
    plan = json.loads(out)
    assert plan["bytes_to_write"] == len(data) and plan["bytes_skipped"] == 0
    code, out, _ = cli(monkeypatch, capsys, str(native), str(missing), "--dry-run", "--json",
                       "--zeros", "skip")
    plan = json.loads(out)
    assert plan["bytes_skipped"] == zero_bytes > 0
    assert plan["bytes_to_write"] == len(data) - zero_bytes
    existing = tmp_path / "old.img"
    existing.write_bytes(b"\xee" * len(data))
    code, out, _ = cli(monkeypatch, capsys, str(native), str(existing), "--dry-run")
    assert code == 0 and "dry run: nothing written" in out and "write target LBA 0+" in out
    assert existing.read_bytes() == b"\xee" * len(data)


def test_refusals_exit_2_and_write_nothing(image, tmp_path, monkeypatch, capsys):
    _, native = image
    small = tmp_path / "small.img"
    small.write_bytes(b"\xee" * (4 * MiB))
    code, _, err = cli(monkeypatch, capsys, str(native), str(small), "--yes")
    assert code == 2 and "smaller than the image" in err
    assert small.read_bytes() == b"\xee" * (4 * MiB)
    four_k = tmp_path / "4k.img"
    four_k.write_bytes(b"\xee" * (8 * MiB))
    with loop_device(four_k, sector_size=4096) as dev:
        code, _, err = cli(monkeypatch, capsys, str(native), dev, "--yes")
    assert code == 2 and "logical sector size 4096" in err
    assert four_k.read_bytes() == b"\xee" * (8 * MiB)


def test_mounted_target_is_refused(image, tmp_path, monkeypatch, capsys):
    _, native = image
    fs = tmp_path / "fs.img"
    with open(fs, "wb") as f:
        f.truncate(8 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    before = sha256_file(fs)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(fs) as dev:
        subprocess.run(["mount", "-o", "ro", dev, str(mnt)], check=True)
        try:
            code, _, err = cli(monkeypatch, capsys, str(native), dev, "--yes")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    assert code == 2 and "busy" in err
    assert sha256_file(fs) == before


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x04]))


def test_bit_flip_in_a_native_chunk_exits_3_and_writes_nothing_from_it_on(
        image, tmp_path, monkeypatch, capsys):
    raw, native = image
    bad = tmp_path / "bad.native"
    shutil.copy(native, bad)
    with NativeReader(str(bad)) as reader:
        data_chunks = [c.index for c in reader.chunks() if c.extent.kind is Kind.DATA]
        victim = data_chunks[len(data_chunks) // 2]
        start, end = reader.offsets[victim], reader.offsets[victim + 1]
    flip_byte(bad, (start + end) // 2)
    size = raw.stat().st_size
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\xee" * size)
    code, _, err = cli(monkeypatch, capsys, str(bad), str(dst), "--yes", "-q")
    assert code == 3 and f"image chunk {victim}" in err
    cut = victim * 512 * 1024
    got = dst.read_bytes()
    assert got[:cut] == raw.read_bytes()[:cut]
    assert got[cut:] == b"\xee" * (size - cut)


def test_damaged_manifest_is_refused_before_anything_is_written(
        image, tmp_path, monkeypatch, capsys):
    raw, native = image
    bad = tmp_path / "bad.native"
    shutil.copy(native, bad)
    blob = bad.read_bytes()
    digest = hashlib.sha256(raw.read_bytes()).hexdigest().encode()
    at = blob.rindex(digest)  # the whole-image sha256 inside the manifest JSON
    flip_byte(bad, at + 3)
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\xee" * raw.stat().st_size)
    code, _, err = cli(monkeypatch, capsys, str(bad), str(dst), "--yes", "-q")
    assert code == 2 and "checksum mismatch" in err
    assert dst.read_bytes() == b"\xee" * raw.stat().st_size


@pytest.mark.parametrize("write_unread", [False, True])
def test_not_acquired_sectors_inside_chunks_are_left_alone(image, tmp_path, monkeypatch, capsys,
                                                           write_unread):
    raw, _ = image
    partial = tmp_path / "partial.native"
    assert main(["acquire", str(raw), str(partial), "--quiet", "--chunk-size", "512K",
                 "--exclude", "modemst1"]) == 0
    first, last = sgdisk_parts(raw)["modemst1"]  # 512 sectors inside one 1024-sector chunk
    size = raw.stat().st_size
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\xee" * size)
    extra = ["--write-unread"] if write_unread else []
    code, out, err = cli(monkeypatch, capsys, str(partial), str(dst), "--yes", "--json", *extra)
    assert code == 0, err
    got, want = dst.read_bytes(), raw.read_bytes()
    lo, hi = first * 512, (last + 1) * 512
    assert got[:lo] == want[:lo] and got[hi:] == want[hi:]
    assert got[lo:hi] == (bytes(hi - lo) if write_unread else b"\xee" * (hi - lo))
    assert json.loads(out)["bytes_skipped"] == (0 if write_unread else hi - lo)
