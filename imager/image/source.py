"""An image seen as a read-only Source, so the table layer can parse an image like a device."""

from __future__ import annotations

from typing import Any

from imager.devices.base import BaseSource, Identity


class ImageAsSource(BaseSource):
    """Sectors of an ImageReader through the Source protocol (reads are chunk-verified)."""

    def __init__(self, reader: Any, path: str = "") -> None:
        identity = Identity(kind="image", path=path,
                            size_bytes=reader.sector_count * reader.sector_size,
                            sector_size=reader.sector_size)
        super().__init__(reader.sector_size, reader.sector_count, identity)
        self.reader = reader

    def _read(self, lba: int, count: int) -> bytes:
        return self.reader.read(lba, count)
