"""``imager export``: an image (any readable format) rewritten in another format.

``EXPORTERS`` maps a ``--to`` name to ``"module:function"``; the function is called as
``function(reader, out_path, **options)`` with an ImageReader. Modules are imported only when
their format is asked for, so a format's module can land (or be missing) independently.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from formats.extent import Kind
from imager.errors import UsageError

EXPORTERS: dict[str, str] = {
    "raw": "imager.export:export_raw",
    "zst": "imager.image.native_export:export_zst",      # native image (repo helper added it)
    "simg": "imager.image.sparse_writer:export_simg",   # sparse helper provides it
    "e01": "imager.image.ewf_export:export_e01",        # e01 helper provides it
}


def exporter(name: str) -> Callable[..., Any]:
    """The export function registered for ``name``.

    Raises:
        UsageError: unknown name, or its module/function is not installed.
    """
    if name not in EXPORTERS:
        raise UsageError(f"--to {name!r}: choose from {', '.join(sorted(EXPORTERS))}")
    module_name, _, func_name = EXPORTERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"--to {name}: not available in this build ({err})") from err


def export_raw(reader: Any, out_path: str, *, partition: str | None = None) -> None:
    """Write the image's bytes as a sparse raw file (holes where the image holds zeros).

    Every chunk is verified as it is read. A native/raw manifest goes beside it as OUT.json,
    so the raw file verifies with the same check values.

    Raises:
        UsageError: ``out_path`` exists, or ``partition`` is given (use ``imager extract``).
        ChecksumMismatch: a damaged chunk.
    """
    if partition is not None:
        raise UsageError("--to raw exports the whole image; use `imager extract` for a partition")
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError as err:
        raise UsageError(f"{out_path} already exists; refusing to overwrite it") from err
    try:
        os.ftruncate(fd, reader.sector_count * reader.sector_size)
        for chunk in reader.chunks():
            data = reader.read_chunk(chunk)
            if chunk.extent.kind is not Kind.DATA and not any(data[:1]):
                continue  # zero / unread / not acquired: leave the hole
            view, off = memoryview(data), chunk.extent.start_lba * reader.sector_size
            while len(view):
                n = os.pwrite(fd, view, off)
                view, off = view[n:], off + n
        os.fsync(fd)
    finally:
        os.close(fd)
    manifest = getattr(reader, "manifest", None)
    if manifest is not None and hasattr(manifest, "to_json"):
        with open(out_path + ".json", "wb") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
