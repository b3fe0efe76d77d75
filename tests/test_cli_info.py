"""``imager info``: real loop devices, images, garbage, hostile names, --json against sgdisk."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fixtures import tables
from imager.cli import main
from tests.conftest import loop_device, need_tool
from tests.tables_oracle import images, sgdisk_info, sgdisk_print

__all__ = ["images"]


def _info(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["info", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_on_loop_device_json_matches_sgdisk(images: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with loop_device(images["phone"], readonly=True) as dev:
        rc, out, err = _info(capsys, dev, "--json")
        oracle = sgdisk_print(dev)
        info = {n: sgdisk_info(dev, n) for n in (1, 16, 40)}
        rc_text, text, _ = _info(capsys, dev)
    assert (rc, err, rc_text) == (0, "", 0)
    data = json.loads(out)
    assert (data["kind"], data["sector_size"], data["sector_count"], data["disk_guid"]) == \
        ("gpt", 512, oracle["sectors"], oracle["disk_guid"])
    assert (data["primary_health"], data["backup_health"]) == ("ok", "ok")
    assert [(p["index"], p["name"], p["first_lba"], p["last_lba"]) for p in data["partitions"]] \
        == [(p["number"], p["name"], p["start"], p["end"]) for p in oracle["partitions"]]
    for n, want in info.items():
        part = data["partitions"][n - 1]
        assert (part["type_id"], part["type_name"], part["attributes"], part["size_bytes"]) == \
            (want["type_guid"], want["type_name"], want["attributes"],
             (want["last"] - want["first"] + 1) * 512)
    assert "boot_b" in text and "ab_unbootable" in text and "Backup GPT:   ok" in text


def test_info_on_4096_loop_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("sgdisk", "losetup")
    image = tables.make_gpt_4k(tmp_path, loop_device)
    with loop_device(image, sector_size=4096, readonly=True) as dev:
        rc, out, _ = _info(capsys, dev, "--json")
        oracle = sgdisk_print(dev)
    data = json.loads(out)
    assert (rc, data["sector_size"], data["sector_count"]) == (0, 4096, oracle["sectors"])
    assert [(p["first_lba"], p["last_lba"]) for p in data["partitions"]] == \
        [(p["start"], p["end"]) for p in oracle["partitions"]]
    # the image file alone: probed at 4096 and shown in its own units
    rc, out, _ = _info(capsys, str(image), "--json")
    assert (rc, json.loads(out)["sector_size"]) == (0, 4096)
    assert json.loads(out)["partitions"] == data["partitions"]


def test_info_mbr_and_no_table(images: dict[str, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _info(capsys, str(images["mbr_logical"]))
    assert rc == 0 and "Table:        mbr" in out and "(logical)" in out
    rc, out, _ = _info(capsys, str(images["notable"]))
    assert rc == 0 and "Table:        none" in out and "No partition table." in out


def _one_error_line(rc: int, out: str, err: str) -> str:
    assert (rc, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imager: error: "), err
    return lines[0]


def test_info_on_garbage_exits_2_with_one_line(images: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(512) + b"EFI PART" + os.urandom(65536 - 520))
    line = _one_error_line(*_info(capsys, str(junk)))
    assert "no valid GPT" in line and "primary at LBA 1" in line
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a disk\n")
    assert "sector" in _one_error_line(*_info(capsys, str(text)))
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    assert "truncated" in _one_error_line(*_info(capsys, str(empty)))
    line = _one_error_line(*_info(capsys, str(images["bad_both"])))
    assert "backup at LBA 8191" in line
    assert "no such file" in _one_error_line(*_info(capsys, str(tmp_path / "missing.img")))


def test_hostile_names_print_safely(images: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _info(capsys, str(images["hostile"]))
    assert rc == 0 and "\x1b" not in out
    names = [sgdisk_info(images["hostile"], n)["name"] for n in (1, 2, 3)]
    assert names == ["evil\nname", "\x1b[31mred\x1b[0m", "../../etc/passwd"]
    rows = [line for line in out.splitlines() if line.strip()[:2] in ("1 ", "2 ", "3 ")]
    assert len(rows) == 3
    assert "evil\\nname" in rows[0] and "\\x1b[31mred\\x1b[0m" in rows[1]
    assert "../../etc/passwd" in rows[2]
    rc, out, _ = _info(capsys, str(images["hostile"]), "--json")
    assert [p["name"] for p in json.loads(out)["partitions"]] == names
    assert "\x1b" not in out


def test_info_reads_android_sparse_image(images: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("img2simg")
    pytest.importorskip("imager.image.sparse")
    simg = tmp_path / "phone.simg"
    subprocess.run(["img2simg", str(images["phone"]), str(simg)], check=True)
    rc, out, _ = _info(capsys, str(simg), "--json")
    oracle = sgdisk_print(images["phone"])
    assert rc == 0
    assert [(p["name"], p["first_lba"]) for p in json.loads(out)["partitions"]] == \
        [(p["name"], p["start"]) for p in oracle["partitions"]]
