"""`imager info` reads the partition table out of any image format, as sgdisk reads the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acquire_support import cli, phone, sgdisk_partitions  # noqa: F401 -- fixture

FORMATS = {"native": ("x.imgz", "x.imgz"), "e01": ("x", "x.E01"), "simg": ("x.simg", "x.simg"),
           "raw": ("x.raw", "x.raw")}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_info_of_an_image_lists_what_sgdisk_lists_for_the_device(
        phone: Path, tmp_path: Path, fmt: str) -> None:  # noqa: F811 -- fixture
    name, opened = FORMATS[fmt]
    code, _, err = cli("acquire", str(phone), str(tmp_path / name), "--quiet", "--format", fmt)
    assert code == 0, err
    code, out, err = cli("info", str(tmp_path / opened), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "gpt" and info["primary_health"] == "ok"
    assert info["backup_health"] == "ok"
    assert [(p["name"], p["first_lba"], p["last_lba"]) for p in info["partitions"]] == \
        sgdisk_partitions(phone)
