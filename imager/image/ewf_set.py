"""An E01 set's names and metadata: segment base names, the manifest beside it, the case
values that go into its header sections."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from typing import Any

from formats.ewf_header import HeaderValues
from formats.extent import Extent
from imager import __version__

CASE_KEYS = {"case_number": ("case_number", "case"), "evidence_number": ("evidence_number",
             "evidence"), "examiner": ("examiner",), "description": ("description",),
             "notes": ("notes",)}


def segment_base(path: str) -> str:
    """The set's base name: ``OUT`` for ``OUT``, ``OUT.E01`` or ``OUT.e01``."""
    root, ext = os.path.splitext(path)
    return root if ext.lower() == ".e01" else path


def header_values(case: Mapping[str, str], identity: Any = None,
                  acquired: int | None = None) -> HeaderValues:
    """EWF case metadata from a case dict (manifest.case keys) and a source identity."""
    picked = {name: next((str(case[k]) for k in keys if case.get(k)), "")
              for name, keys in CASE_KEYS.items()}
    stamp = int(time.time()) if acquired is None else acquired
    return HeaderValues(model=getattr(identity, "model", "") or "",
                        serial=getattr(identity, "serial", "") or "",
                        version=__version__, platform=platform.system() or "Linux",
                        acquired=stamp, system=stamp, **picked)




def merge_overlapping(extents: list[Extent]) -> list[Extent]:
    """Sort and join overlapping or adjacent extents (all of one kind)."""
    out: list[Extent] = []
    for ext in sorted(extents, key=lambda e: e.start_lba):
        if out and ext.start_lba <= out[-1].end_lba:
            last = out.pop()
            end = max(last.end_lba, ext.end_lba)
            ext = Extent(last.start_lba, end - last.start_lba, last.kind)
        out.append(ext)
    return out
