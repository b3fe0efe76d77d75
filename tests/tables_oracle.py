"""What third-party tools say about a disk (sgdisk, sfdisk, mmls), parsed for the table tests.

Plus the session-wide fixture images (fixtures/tables.py) and an in-memory Source.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixtures import tables
from imager.devices.base import BaseSource, Identity
from tests.conftest import need_tool


def tool(*cmd: str) -> str:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True).stdout


def sgdisk_print(path: Path | str) -> dict[str, Any]:
    """``sgdisk -p``: disk GUID, usable range, sector size, partitions (number, start, end)."""
    out = tool("sgdisk", "-p", str(path))
    disk = {"disk_guid": re.search(r"Disk identifier \(GUID\): (\S+)", out).group(1),
            "sector_size": int(re.search(r"Sector size \(logical[^:]*\): (\d+)", out).group(1)),
            "sectors": int(re.search(r": (\d+) sectors,", out).group(1))}
    m = re.search(r"First usable sector is (\d+), last usable sector is (\d+)", out)
    disk["first_usable"], disk["last_usable"] = int(m.group(1)), int(m.group(2))
    disk["free_sectors"] = int(re.search(r"Total free space is (\d+) sectors", out).group(1))
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+ \S+\s+([0-9A-F]{4})  (.*)$", out,
                      re.MULTILINE)
    disk["partitions"] = [{"number": int(n), "start": int(s), "end": int(e), "code": c,
                           "name": name} for n, s, e, c, name in rows]
    return disk


def sgdisk_info(path: Path | str, number: int) -> dict[str, Any]:
    """``sgdisk -i N``: type GUID + name, unique GUID, first/last, attribute flags, name."""
    out = tool("sgdisk", "-i", str(number), str(path))
    t = re.search(r"Partition GUID code: (\S+) \((.*)\)", out)
    return {"type_guid": t.group(1), "type_name": t.group(2),
            "unique_guid": re.search(r"Partition unique GUID: (\S+)", out).group(1),
            "first": int(re.search(r"First sector: (\d+)", out).group(1)),
            "last": int(re.search(r"Last sector: (\d+)", out).group(1)),
            "attributes": int(re.search(r"Attribute flags: ([0-9A-F]+)", out).group(1), 16),
            "name": re.search(r"Partition name: '(.*)'", out, re.DOTALL).group(1)}


def sfdisk_json(path: Path | str) -> dict[str, Any]:
    return json.loads(tool("sfdisk", "--json", str(path)))["partitiontable"]


def sfdisk_free(path: Path | str) -> list[tuple[int, int]]:
    """``sfdisk -F``: unpartitioned (start, end) ranges."""
    out = tool("sfdisk", "-F", str(path))
    return [(int(a), int(b)) for a, b in re.findall(r"^\s*(\d+)\s+(\d+)\s+\d+\s+\S+$", out, re.MULTILINE)]


def mmls(path: Path | str, *opts: str) -> list[dict[str, Any]]:
    """``mmls`` rows: slot, start, end, length, description."""
    out = tool("mmls", *opts, str(path))
    rows = re.findall(r"^\d+:\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", out, re.MULTILINE)
    return [{"slot": s, "start": int(a), "end": int(b), "length": int(n), "desc": d}
            for s, a, b, n, d in rows]


class MemorySource(BaseSource):
    """A Source over bytes (for fuzzing without files)."""

    def __init__(self, data: bytes, sector_size: int = 512) -> None:
        super().__init__(sector_size, len(data) // sector_size,
                         Identity(kind="memory", path="", size_bytes=len(data),
                                  sector_size=sector_size))
        self.data = data

    def _read(self, lba: int, count: int) -> bytes:
        return self.data[lba * self.sector_size:(lba + count) * self.sector_size]


_BUILT: dict[str, dict[str, Path]] = {}


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tool-made table image (no loop devices), built once per session.

    Each test module imports this fixture, which makes one fixture per module: the cache
    keeps the images (sgdisk needs ~1 s per run) shared between them.
    """
    need_tool("sgdisk", "sfdisk", "mkfs.ext4", "mmls")
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = _build(tmp_path_factory.mktemp("tables"))
    return _BUILT[key]


def _build(d: Path) -> dict[str, Path]:
    small = tables.make_small_gpt(d)
    out = {"small": small,
           "bad_primary_header": tables.make_corrupt_primary_header(d, small),
           "bad_primary_array": tables.make_corrupt_primary_array(d, small),
           "bad_backup": tables.make_corrupt_backup(d, small),
           "bad_both": tables.make_both_corrupt(d, small)}
    makers = {"phone": tables.make_phone_gpt, "mbr_logical": tables.make_mbr_logical,
              "hybrid": tables.make_hybrid_mbr, "notable": tables.make_no_table,
              "hostile": tables.make_hostile_names}
    return out | {name: make(d) for name, make in makers.items()}
