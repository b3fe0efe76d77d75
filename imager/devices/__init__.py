"""Opening Sources and Targets from the strings users type.

A spec is a path (image file or block device), ``-`` (stdin), or ``SCHEME:rest`` for a
registered backend (``usb-msc:``, ``edl:``, ``fastboot:``). Backends register a factory in
``SCHEMES`` lazily, so importing this module never imports pyusb.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from imager.devices.base import BaseSource, BaseTarget, Identity, Source, Target
from imager.errors import BadInput, UsageError

__all__ = [
    "SCHEMES",
    "BaseSource",
    "BaseTarget",
    "Identity",
    "Source",
    "Target",
    "open_source",
    "open_target",
]

# scheme -> (module, source factory name, target factory name or None)
SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "usb-msc": ("imager.devices.usb.msc", "open_source", "open_target"),
    "edl": ("imager.devices.usb.edl", "open_source", "open_target"),
    "fastboot": ("imager.devices.usb.fastboot", "open_source", "open_target"),
}


def _scheme(spec: str) -> tuple[str, str] | None:
    head, sep, rest = spec.partition(":")
    if sep and head in SCHEMES:
        return head, rest
    return None


def _factory(scheme: str, which: int) -> Any:
    module_name, *names = SCHEMES[scheme]
    name = names[which]
    if name is None:
        raise UsageError(f"{scheme}: cannot be used as a target")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"{scheme}: backend not available ({err})") from err
    return getattr(module, name)


def open_source(spec: str, *, sector_size: int | None = None, direct: bool = False,
                **options: Any) -> BaseSource:
    """Open what ``spec`` names for reading only; nothing is ever written to it.

    ``direct`` reads block devices with O_DIRECT: no page cache, and a bad sector fails alone
    instead of taking its whole cache page (and readahead) with it.
    """
    scheme = _scheme(spec)
    if scheme:
        return _factory(scheme[0], 0)(scheme[1], sector_size=sector_size, **options)
    if spec == "-":
        from imager.devices.stdin import StdinSource

        return StdinSource(sector_size=sector_size or 512, **options)
    from imager.devices.file import DirectFileSource, FileSource

    if not os.path.lexists(spec):  # a typo, not a device failure: bad input (exit 2)
        raise BadInput(f"{spec}: no such file or device")
    source = (DirectFileSource if direct else FileSource)(spec, sector_size=sector_size)
    if source.sector_count == 0:  # nothing to image; an empty image would look like success
        source.close()
        raise BadInput(f"{spec}: truncated to 0 bytes (empty): nothing to read")
    return source


def open_target(spec: str, *, sector_size: int | None = None,
                create_size: int | None = None, **options: Any) -> BaseTarget:
    """Open what ``spec`` names for writing (block devices exclusively)."""
    scheme = _scheme(spec)
    if scheme:
        return _factory(scheme[0], 1)(scheme[1], sector_size=sector_size, **options)
    from imager.devices.file import FileTarget

    return FileTarget(spec, sector_size=sector_size, create_size=create_size)
