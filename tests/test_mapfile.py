"""formats/mapfile.py against the GNU ddrescue manual's grammar and ddrescuelog's reading."""

from __future__ import annotations

import re
import subprocess
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.errors import FormatError
from formats.mapfile import (
    Block,
    Mapfile,
    MapfileError,
    Status,
    build_mapfile,
    extend_domain,
    parse_mapfile,
    set_status,
    totals,
)
from tests.conftest import need_tool

# Verbatim output of ddrescue 1.27 (specs/ddrescue-mapfile.md, "Real output").
REAL = """\
# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -q raw.img copy.img map.txt
# Start time:   2026-11-25 16:24:30
# Current time: 2026-11-25 16:24:30
# Finished
# current_pos  current_status  current_pass
0x00040000     +               1
#      pos        size  status
0x00000000  0x00048000  +
"""


def test_parse_real_ddrescue_output() -> None:
    m = parse_mapfile(REAL.encode())
    assert (m.current_pos, m.current_status, m.current_pass) == (0x40000, "+", 1)
    assert m.blocks == (Block(0, 0x48000, Status.FINISHED),)


def test_build_matches_ddrescue_number_layout() -> None:
    text = build_mapfile(parse_mapfile(REAL))
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert body == ["0x00040000     +               1", "0x00000000  0x00048000  +"]


def test_number_syntax_like_c_lli_and_comments() -> None:
    m = parse_mapfile("0x10 * # trailing comment\n0 010 +\n8 0x10 -  # c\n0x18 24 /\n")
    assert m.current_pass == 1  # optional when reading
    assert [(b.pos, b.size, b.status.value) for b in m.blocks] == [
        (0, 8, "+"), (8, 16, "-"), (24, 24, "/")]


def test_empty_map_line_is_accepted() -> None:
    assert parse_mapfile("0 ? 1\n0 0 ?\n").blocks == ()


@pytest.mark.parametrize(("text", "line", "words"), [
    ("0 ?\n0 512 +\n256 512 -\n", 3, "overlaps"),
    ("0 ?\n0 512 +\n1024 512 -\n", 3, "gap"),
    ("0 ?\n0 512 +\n512 512 x\n", 3, "status 'x'"),
    ("0 ?\n0 512 ++\n", 2, "status '++'"),
    ("0 Z 1\n0 512 +\n", 1, "current_status 'Z'"),
    ("0 ? 0\n", 1, "current_pass '0'"),
    ("0 ? 1x\n", 1, "current_pass"),
    ("0 ?\n0 0x10000000000000000 +\n", 2, "larger than"),
    ("0 ?\n99999999999999999999999 1 +\n", 2, "larger than"),
    ("0 ?\n0x7FFFFFFFFFFFFFFF 2 +\n", 2, "ends past"),
    ("0 ?\n0 -512 +\n", 2, "negative"),
    ("0 ?\n0 0 +\n", 2, "size 0"),
    ("0 ?\n0 12z +\n", 2, "not a number"),
    ("0 ?\n0 09 +\n", 2, "not a number"),  # leading 0 means octal to %lli
    ("0 ?\n0 512\n", 2, "3 fields"),
    ("0 ?\n0 512 + extra\n", 2, "3 fields"),
    ("# only comments\n\n", 0, "no status line"),
    ("0 ?\n0 0 ?\n0 512 +\n", 3, "empty-map"),
])
def test_hostile_mapfiles_give_line_numbered_errors(text: str, line: int, words: str) -> None:
    with pytest.raises(MapfileError) as info:
        parse_mapfile(text)
    assert info.value.line_no == line
    assert words in str(info.value)
    assert isinstance(info.value, FormatError)


def test_non_ascii_is_a_clean_error() -> None:
    with pytest.raises(MapfileError, match="not ASCII"):
        parse_mapfile(b"0 ?\n0 512 \xff\n")


def _model(blocks: list[Block], size: int) -> list[str]:
    out = ["?"] * size
    for b in blocks:
        out[b.pos:b.end] = [b.status.value] * b.size
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(1, 20), st.sampled_from(list(Status))),
                max_size=12))
def test_set_status_matches_a_per_byte_model(edits: list[tuple[int, int, Status]]) -> None:
    size = 64
    blocks = extend_domain([], size)
    model = ["?"] * size
    for pos, n, status in edits:
        n = min(n, size - pos)
        blocks = set_status(blocks, pos, n, status)
        model[pos:pos + n] = [status.value] * n
        assert _model(blocks, size) == model
        assert all(a.end == b.pos and a.status is not b.status for a, b in pairwise(blocks))
        assert blocks[0].pos == 0 and blocks[-1].end == size


def test_totals_count_every_state() -> None:
    blocks = [Block(0, 512, Status.FINISHED), Block(512, 1024, Status.BAD_SECTOR),
              Block(1536, 512, Status.FINISHED)]
    t = totals(blocks)
    assert t[Status.FINISHED] == 1024 and t[Status.BAD_SECTOR] == 1024
    assert t[Status.NON_TRIED] == 0


def _ddrescuelog_totals(path: Path) -> dict[str, int]:
    out = subprocess.run(["ddrescuelog", "-t", str(path)], check=True, capture_output=True,
                         text=True).stdout
    found = dict(re.findall(r"(non-tried|rescued|non-trimmed|non-scraped|bad-sector):\s+(\d+) B",
                            out))
    return {k: int(v) for k, v in found.items()}


def test_ddrescuelog_reads_what_we_build(tmp_path: Path) -> None:
    need_tool("ddrescuelog")
    blocks = [Block(0, 512, Status.FINISHED), Block(512, 512, Status.NON_TRIMMED),
              Block(1024, 512, Status.NON_SCRAPED), Block(1536, 512, Status.BAD_SECTOR),
              Block(2048, 1024, Status.NON_TRIED), Block(3072, 512, Status.FINISHED)]
    path = tmp_path / "map"
    path.write_text(build_mapfile(Mapfile(1536, "/", 1, tuple(blocks)), ["made by a test"]))
    # byte counts below 1000 are printed exactly by ddrescuelog ("512 B")
    assert _ddrescuelog_totals(path) == {"non-tried": 1024, "rescued": 1024, "non-trimmed": 512,
                                         "non-scraped": 512, "bad-sector": 512}
    listed = subprocess.run(["ddrescuelog", "-b512", "-l-", str(path)], check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == ["3"]



@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1 << 40), st.sampled_from(list(Status))), max_size=20),
       st.integers(0, (1 << 62)), st.sampled_from(sorted("?*/-FG+")), st.integers(1, 99))
def test_build_then_parse_round_trips(sizes: list[tuple[int, Status]], pos: int, phase: str,
                                      current_pass: int) -> None:
    blocks, at = [], 0
    for size, status in sizes:
        blocks.append(Block(at, size, status))
        at += size
    m = Mapfile(pos, phase, current_pass, tuple(blocks))
    text = build_mapfile(m, ["a comment # with a hash"])
    assert parse_mapfile(text) == m
    assert build_mapfile(parse_mapfile(text), ["a comment # with a hash"]) == text
