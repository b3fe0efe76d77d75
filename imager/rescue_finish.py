"""Turn a rescue (sparse raw file + GNU mapfile) into a native image with UNREAD ranges.

The raw file is seen through its mapfile as a Source whose non-rescued sectors (anything but
``+``) cannot be read; the acquire pipeline then stores them as UNREAD (zeros in the image, so
stock ``zstd -d`` still gives the raw bytes, and listed in the manifest, never as data).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from formats.errors import FormatError
from formats.extent import Extent, Kind, merge
from formats.manifest import Manifest
from formats.mapfile import Status, parse_mapfile
from imager import __version__
from imager.devices.base import BaseSource
from imager.devices.file import FileSource
from imager.errors import BadInput, DeviceError, ReadError, UsageError
from imager.hashing import CHUNK_CHECK
from imager.report import now_utc
from imager.rescue_map import RescueMap

log = logging.getLogger(__name__)


class MappedRawSource(BaseSource):
    """A rescued raw file whose sectors outside the mapfile's ``+`` blocks fail to read."""

    def __init__(self, raw_path: str, map_path: Path, sector_size: int = 512) -> None:
        if not map_path.exists():
            raise BadInput(f"{map_path}: no such mapfile")
        self.raw = FileSource(raw_path, sector_size=sector_size)
        try:
            parsed = parse_mapfile(map_path.read_bytes())
            # ddrescue leaves OUT short when the end was never rescued: the map knows the size
            size = max(self.raw.size_bytes, parsed.end)
            if size % sector_size:
                raise BadInput(f"{map_path}: mapfile ends at {size}, not a multiple of the "
                               f"{sector_size}-byte sector size")
            self.map = RescueMap.from_mapfile(parsed, size, sector_size, str(map_path))
        except BaseException:
            self.raw.close()
            raise
        identity = dataclasses.replace(self.raw.identity, size_bytes=size)
        super().__init__(sector_size, size // sector_size, identity)
        self.map_path = map_path
        self.unread = merge([Extent(b.pos // sector_size, b.size // sector_size, Kind.UNREAD)
                             for b in self.map.blocks if b.status is not Status.FINISHED])
        beyond = [b for b in self.map.blocks
                  if b.status is Status.FINISHED and b.end > self.raw.size_bytes]
        if beyond:
            self.raw.close()
            raise BadInput(f"{raw_path}: mapfile says bytes {beyond[0].pos}..{beyond[0].end} "
                           f"were rescued, but the file ends at {self.raw.size_bytes}")

    def unread_in(self, lba: int, count: int) -> list[Extent]:
        """The UNREAD extents clipped to ``[lba, lba+count)``."""
        end = lba + count
        return [Extent(max(u.start_lba, lba), min(u.end_lba, end) - max(u.start_lba, lba),
                       Kind.UNREAD) for u in self.unread if u.end_lba > lba and u.start_lba < end]

    def _read(self, lba: int, count: int) -> bytes:
        bad = self.unread_in(lba, count)
        if bad:
            raise ReadError(bad[0].start_lba, bad[0].count, "not rescued (mapfile)")
        return self._raw(lba, count)

    def _raw(self, lba: int, count: int) -> bytes:
        have = max(0, min(count, self.raw.sector_count - lba))
        data = self.raw.read(lba, have) if have else b""
        return data + bytes((count - have) * self.sector_size)

    def read_with_unread(self, lba: int, count: int) -> tuple[bytes, list[Extent]]:
        """The data with non-rescued sectors as zeros, and those sectors as UNREAD extents."""
        bad = self.unread_in(lba, count)
        data = bytearray(self._raw(lba, count))
        for u in bad:
            off = (u.start_lba - lba) * self.sector_size
            data[off:off + u.count * self.sector_size] = bytes(u.count * self.sector_size)
        return bytes(data), bad

    def close(self) -> None:
        self.raw.close()


def _table(source: BaseSource) -> Any:
    try:
        from imager.table import read_table
    except ImportError:
        return None
    try:
        return read_table(source)
    except (FormatError, DeviceError) as err:  # damaged tables are what rescues are about
        log.warning("no usable partition table in the rescued image: %s", err)
        return None


def finish(raw_path: str, map_path: Path, image_path: str, *, sector_size: int = 512,
           chunk_bytes: int = 4 << 20, level: int = 3, command_line: tuple[str, ...] = (),
           progress: Callable[[int, int, str], None] | None = None) -> Manifest:
    """Write ``image_path`` (native) from the rescued ``raw_path`` and its mapfile.

    Returns:
        The manifest written; its ``unread`` lists every sector not marked ``+``.

    Raises:
        UsageError: the image exists. BadInput/FormatError: the mapfile does not fit.
    """
    from imager.hashing import MultiHash
    from imager.image.native import NativeSink
    from imager.pipeline import Progressed, Writer, acquire
    from imager.plan import build_plan

    if os.path.exists(image_path):
        raise UsageError(f"{image_path} already exists; choose another name or delete it")
    started = now_utc()
    source = MappedRawSource(raw_path, map_path, sector_size)
    try:
        table = _table(source)
        plan = build_plan(source.sector_count, source.sector_size,
                          max(1, chunk_bytes // source.sector_size), table)
        sink = NativeSink(image_path, sector_size=source.sector_size,
                          sector_count=source.sector_count, chunk_sectors=plan.chunk_sectors,
                          level=level)
        writer = Writer(sink, MultiHash(("sha256",)), Progressed(), None)
        acquire(source, sink, plan, progress=progress, writer=writer, retries=0,
                check_algo=CHUNK_CHECK)
        manifest = _manifest(source, table, plan, writer, started, command_line)
        sink.finalize(manifest)
        return manifest
    finally:
        source.close()


def _manifest(source: MappedRawSource, table: Any, plan: Any, writer: Any,
              started: str, command_line: tuple[str, ...]) -> Manifest:
    done = writer.done
    table_dict: dict = table.to_dict() if table is not None else {}
    raw = tuple((e.start_lba, source.read(e.start_lba, e.count))
                for e in getattr(table, "metadata_extents", ()) or ()
                if not source.unread_in(e.start_lba, e.count))
    identity = source.identity.to_dict()
    identity["extra"] = dict(identity.get("extra") or {}, rescue_mapfile=str(source.map_path))
    return Manifest(
        sector_size=source.sector_size, sector_count=source.sector_count,
        chunk_sectors=plan.chunk_sectors, chunk_runs=tuple(done.runs),
        chunk_checks=tuple(done.checks), chunk_check=CHUNK_CHECK,
        hashes=writer.hasher.hexdigests(), source=identity, table=table_dict,
        table_sectors=raw, unread=tuple((u.start_lba, u.count) for u in done.unread),
        options={"format": "native", "from": "rescue", "level": writer.sink.level},
        timings={"acquire_seconds": round(done.seconds, 3)}, started=started,
        finished=now_utc(), command_line=command_line, tool_version=__version__,
        image_format="native")
