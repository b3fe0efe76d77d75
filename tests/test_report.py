"""The acquisition report: bad-sector ranges mapped to partitions, text and JSON forms.

The truth: the LBAs we make the faulty FUSE device fail, the partition layout sgdisk writes,
and libewf's ewfinfo for the E01 error2 section.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.faulty_device import faulty_device, make_image
from formats.extent import Kind
from formats.manifest import KindRun, Manifest
from imager.cli import main
from imager.report import REPORT_VERSION, build_report, locate_ranges, write_report
from imager.report_text import render_text
from tests.conftest import have_root, need_tool
from tests.ewf_support import ewfacquire, ewfinfo, ewfverify, make_source

BAD = [100, 3000, 3001, 5000, 12000]          # unallocated, boot x2, userdata, unallocated
EXPECTED = [(100, 1, "(outside any partition)", None), (3000, 2, "boot", 1),
            (5000, 1, "userdata", 2), (12000, 1, "(outside any partition)", None)]
DOCUMENTED_KEYS = {"report_format", "report_version", "generated", "generated_by", "tool",
                   "command_line", "command_line_text", "host", "case", "times", "image",
                   "source", "partition_table", "hashes", "chunks", "unread", "unread_sectors",
                   "not_acquired", "not_acquired_sectors", "verification", "write_protection"}


def gpt_disk(path: Path) -> bytes:
    need_tool("sgdisk")
    make_image(path, 6 << 20)
    subprocess.run(["sgdisk", "-o", "-n1:2048:+1M", "-c1:boot", "-n2:0:+2M", "-c2:userdata",
                    str(path)], check=True, capture_output=True)
    return path.read_bytes()


def test_acquisition_with_bad_sectors_reports_them_by_partition(tmp_path: Path) -> None:
    if not have_root():
        pytest.skip("FUSE needs root here")
    gpt_disk(tmp_path / "disk.img")
    out = tmp_path / "case"
    with faulty_device(tmp_path / "disk.img", bad=BAD) as dev:
        done = subprocess.run([sys.executable, "-m", "imager", "acquire", dev.path, str(out),
                               "--format", "e01", "--quiet", "--chunk-size", "256k",
                               "--case", "R-1", "--examiner", "Eve", "--hash", "md5"],
                              check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "case.E01.report.json").read_text())
    got = [(r["start_lba"], r["count"], loc["partition"], loc["index"])
           for r in report["unread"] for loc in r["locations"]]
    assert got == EXPECTED
    assert report["unread_sectors"] == len(BAD)
    assert report["image"]["segments"] == [str(tmp_path / "case.E01")]
    assert report["image"]["stored_hashes"]["md5"] == report["hashes"]["md5"]
    text = (tmp_path / "case.E01.report.txt").read_text()
    assert "boot #1: LBA 3000-3001 (2 sectors)" in text
    assert "userdata #2: LBA 5000-5000 (1 sectors)" in text
    assert "Examiner:        Eve" in text
    info = ewfinfo(tmp_path / "case.E01")
    for first, count, *_ in EXPECTED:
        assert f"at sector(s): {first} - {first + count - 1} number: {count}" in info
    assert ewfverify(tmp_path / "case.E01").returncode == 0


def _manifest(unread: tuple[tuple[int, int], ...], table: dict) -> Manifest:
    return Manifest(sector_size=512, sector_count=12288, chunk_sectors=512,
                    chunk_runs=(KindRun(0, 24, Kind.DATA),), chunk_checks=("0" * 64,) * 24,
                    hashes={"sha256": "ab" * 32}, source={"kind": "block", "path": "/dev/sdz",
                    "size_bytes": 12288 * 512, "sector_size": 512, "model": "Phone X",
                    "serial": "SN123", "extra": {"device": "/dev/sdz"}},
                    table=table, unread=unread, not_acquired=((8192, 64),),
                    case={"case": "C-9", "examiner": "Ann"}, started="2026-01-02T03:04:05+00:00",
                    finished="2026-01-02T03:05:05+00:00", command_line=("imager", "acquire"),
                    tool_version="0.1.0", image_format="native")


TABLE = {"kind": "gpt", "disk_guid": "G", "partitions": [
    {"index": 1, "name": "boot", "first_lba": 2048, "last_lba": 4095, "size_bytes": 1 << 20},
    {"index": 2, "name": "userdata", "first_lba": 4096, "last_lba": 8191, "size_bytes": 2 << 20}],
    "metadata_extents": [{"start_lba": 0, "count": 34}, {"start_lba": 12255, "count": 33}]}


def test_ranges_split_at_partition_boundaries() -> None:
    located = locate_ranges([(30, 10), (4090, 10), (8190, 4), (12250, 10)], TABLE, 512)
    pieces = [[(p["partition"], p["start_lba"], p["count"]) for p in r["locations"]]
              for r in located]
    assert pieces == [
        [("(partition table)", 30, 4), ("(outside any partition)", 34, 6)],
        [("boot", 4090, 6), ("userdata", 4096, 4)],
        [("userdata", 8190, 2), ("(outside any partition)", 8192, 2)],
        [("(outside any partition)", 12250, 5), ("(partition table)", 12255, 5)]]
    assert located[1]["size_bytes"] == 10 * 512 and located[1]["last_lba"] == 4099


def test_report_json_is_stable_and_documented(tmp_path: Path) -> None:
    report = build_report(_manifest(((5000, 8),), TABLE), str(tmp_path / "img"))
    assert set(report) == DOCUMENTED_KEYS
    assert report["report_version"] == REPORT_VERSION
    assert report["case"]["case_number"] == "C-9" and report["source"]["serial"] == "SN123"
    assert report["times"]["duration_seconds"] == 60
    assert report["not_acquired"][0]["locations"][0]["partition"] == "(outside any partition)"
    doc = (Path(__file__).resolve().parent.parent / "docs" / "REPORT.md").read_text()
    for key in DOCUMENTED_KEYS:
        assert f"`{key}`" in doc, key
    json.dumps(report)          # JSON-ready


def test_write_report_files_and_text(tmp_path: Path) -> None:
    image = tmp_path / "phone.img"
    paths = write_report(_manifest(((5000, 8),), TABLE), str(image),
                         verification={"result": "passed", "when": "2026-01-02T04:00:00+00:00"})
    assert paths == [f"{image}.report.txt", f"{image}.report.json"]
    text = Path(paths[0]).read_text()
    assert re.search(r"Serial:\s+SN123", text) and "userdata #2: LBA 5000-5007" in text
    assert "Result:     passed" in text and "When (UTC): 2026-01-02T04:00:00+00:00" in text
    assert json.loads(Path(paths[1]).read_text())["host"]["hostname"]
    assert render_text(json.loads(Path(paths[1]).read_text())) .splitlines()[3:] == \
        text.splitlines()[3:]


def test_report_cli_on_an_ewfacquire_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_source(tmp_path / "src.raw")
    e01 = ewfacquire(tmp_path / "src.raw", tmp_path / "theirs")
    assert main(["report", str(e01), "--format", "json", "--verify"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["case"]["examiner"] == "Examiner X"
    assert report["verification"]["result"] == "passed"
    assert report["image"]["format"] == "e01"
    assert report["hashes"]["md5"] == report["verification"]["hashes_actual"]["md5"]


def test_report_cli_verify_fails_on_damage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_source(tmp_path / "src.raw", sectors=2048)
    e01 = ewfacquire(tmp_path / "src.raw", tmp_path / "d")
    raw = bytearray(e01.read_bytes())
    raw[raw.index(b"sectors\0") + 76 + 500] ^= 1
    e01.write_bytes(bytes(raw))
    assert main(["report", str(e01), "--verify"]) == 3
    assert "Result:         failed" in capsys.readouterr().out


def test_usb_source_identity_in_report(tmp_path: Path) -> None:
    manifest = _manifest((), TABLE)
    source = {"kind": "usb-msc", "path": "usb-msc:18d1:4ee0", "size_bytes": 12288 * 512,
              "sector_size": 512, "model": "Google Pixel", "serial": "9A1B",
              "extra": {"vid": 0x18D1, "pid": 0x4EE0, "lun": 2, "usb_port": "3-1.4"}}
    report = build_report(Manifest(**{**manifest.__dict__, "source": source}), "x")
    assert report["source"]["usb_path"] == "3-1.4 18d1:4ee0 LUN 2"
    assert report["source"]["device_node"] == ""
    assert "USB path:     3-1.4 18d1:4ee0 LUN 2" in render_text(report)
