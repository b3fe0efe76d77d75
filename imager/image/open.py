"""Open any image a user names, whatever its format, as an ImageReader.

Detection is by content (magic bytes), never by file name. Each format lives in its own module
with a reader class taking the path; they are imported lazily.
"""

from __future__ import annotations

import os
from typing import Any

from imager.errors import BadInput

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SPARSE_MAGIC = b"\x3a\xff\x26\xed"
EVF_MAGIC = b"EVF\x09\x0d\x0a\xff\x00"


def detect(path: str) -> str:
    """Name the format of the image at ``path``: native, simg, e01, snapshot or raw."""
    if "@" in path and not os.path.exists(path):
        return "snapshot"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise BadInput(f"{path}: cannot open: {err.strerror}") from err
    if head[:4] == ZSTD_MAGIC or (len(head) >= 4 and 0x184D2A50 <= int.from_bytes(head[:4], "little") <= 0x184D2A5F):
        return "native"
    if head[:4] == SPARSE_MAGIC:
        return "simg"
    if head == EVF_MAGIC:
        return "e01"
    return "raw"


READERS = {
    "native": ("imager.image.native", "NativeReader"),
    "simg": ("imager.image.sparse", "SparseReader"),
    "e01": ("imager.image.ewf", "EwfReader"),
    "snapshot": ("imager.repo.reader", "SnapshotReader"),
    "raw": ("imager.image.raw", "RawReader"),
}


def open_image(path: str, **options: Any) -> Any:
    """An ImageReader for ``path`` (see imager.image.base.ImageReader).

    Raises:
        BadInput: the file cannot be opened or is not a valid image of its detected format.
    """
    import importlib

    kind = detect(path)
    module_name, class_name = READERS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(path, **options)
