"""``imager export IMAGE --to e01 OUT``: any ImageReader written as an E01 segment set."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from formats.extent import Extent, Kind
from imager.image.ewf_writer import DEFAULT_SEGMENT_SIZE, EwfSink


class _Ranges:
    """What finalize() reads from a manifest, for exports of images without one."""

    def __init__(self, unread: list[Extent], not_acquired: list[Extent]) -> None:
        self.unread = tuple((e.start_lba, e.count) for e in unread)
        self.not_acquired = tuple((e.start_lba, e.count) for e in not_acquired)
        self.hashes: dict[str, str] = {}


def export_e01(reader: Any, out_path: str, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
               compression: str = "fast", **_options: Any) -> EwfSink:
    """Write any ImageReader as an E01 set at ``out_path`` (OUT or OUT.E01).

    Every chunk is verified as it is read. UNREAD / NOT_ACQUIRED ranges of the image (its
    ``extents()``) are carried over: zeros in the E01, UNREAD listed in error2. The image's
    manifest, when it has one, supplies the case metadata and is saved beside the set.

    Raises:
        UsageError: the set exists. ChecksumMismatch: a damaged chunk in the input.
    """
    manifest = getattr(reader, "manifest", None)
    case = dict(getattr(manifest, "case", {}) or {})
    source = getattr(manifest, "source", {}) or {}
    identity = SimpleNamespace(model=source.get("model", ""), serial=source.get("serial", ""))
    sink = EwfSink(out_path, sector_size=reader.sector_size, sector_count=reader.sector_count,
                   case=case, identity=identity, segment_size=segment_size,
                   compression=compression)
    try:
        for chunk in reader.chunks():
            data = reader.read_chunk(chunk)
            sink.write(Extent(chunk.extent.start_lba, chunk.extent.count), data)
    except BaseException:
        sink.abort()
        raise
    extents = reader.extents() if hasattr(reader, "extents") else []
    if manifest is None or not hasattr(manifest, "to_json"):
        manifest = _Ranges([e for e in extents if e.kind is Kind.UNREAD],
                           [e for e in extents if e.kind is Kind.NOT_ACQUIRED])
    sink.finalize(manifest)
    return sink
