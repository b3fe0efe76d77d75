"""The acquisition report: what an examiner attaches to a case file (text) and a stable JSON.

Built from the manifest (formats.manifest.Manifest) and, when given, the image reader (E01
segments and stored hashes), the verification result and the write protection in force.
Images without a manifest (an E01 made by ewfacquire) are reported from what they store.
The JSON layout is documented in docs/REPORT.md; ``REPORT_VERSION`` changes with it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import shlex
import socket
from typing import Any

from formats.errors import FormatError
from formats.extent import Kind
from formats.manifest import KindRun, Manifest
from imager import __version__
from imager.errors import ImagerError

log = logging.getLogger(__name__)

REPORT_FORMAT = "imager-acquisition-report"
REPORT_VERSION = "1.0"


def now_utc() -> str:
    """The current time, UTC, ISO 8601 to the second (every timestamp imager records)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def host_info() -> dict[str, str]:
    """The machine this runs on (recorded at acquisition time)."""
    return {"hostname": socket.gethostname(), "system": platform.system(),
            "release": platform.release(), "machine": platform.machine(),
            "python": platform.python_version()}


def _verification(value: Any) -> dict[str, Any]:
    """A verify_image() VerifyReport or a ready dict -> the report's verification object."""
    if value is None:
        return {"result": "not run"}
    if isinstance(value, dict):
        return {"result": "not run", **value}
    return {"result": "passed" if value.ok else "failed",
            "when": getattr(value, "when", "") or now_utc(),
            "chunks_checked": value.chunks,
            "bad_chunks": [{"chunk": i, "start_lba": lba, "count": n, "reason": why}
                           for i, lba, n, why in value.bad_chunks],
            "hashes_expected": dict(value.expected), "hashes_actual": dict(value.actual),
            "mismatched_ranges": [list(r) for r in value.mismatches]}


def _protection(manifest: Any, protection: Any) -> dict[str, Any]:
    if protection is not None:
        return protection.to_dict() if hasattr(protection, "to_dict") else dict(protection)
    recorded = (getattr(manifest, "options", None) or {}).get("write_protection")
    if recorded:
        return dict(recorded)
    return {"method": "unknown", "text": "not recorded (acquired without --write-block "
                                          "information)"}


def _chunks(manifest: Any) -> dict[str, Any]:
    kinds = {k.value: 0 for k in Kind}
    for run in manifest.chunk_runs:
        kinds[run.kind.value] += run.count
    return {"chunk_sectors": manifest.chunk_sectors, "count": manifest.chunk_count,
            "by_kind": kinds, "check_algorithm": manifest.chunk_check,
            "data_chunks_with_check": len(manifest.chunk_checks)}


def _case(case: dict[str, str]) -> dict[str, str]:
    keys = {"case_number": ("case_number", "case"), "evidence_number": ("evidence_number",
            "evidence"), "examiner": ("examiner",), "description": ("description",),
            "notes": ("notes",)}
    return {name: next((str(case[k]) for k in alts if case.get(k)), "")
            for name, alts in keys.items()}


def _duration(manifest: Any) -> float | None:
    try:
        start = datetime.datetime.fromisoformat(manifest.started)
        end = datetime.datetime.fromisoformat(manifest.finished)
    except (TypeError, ValueError):
        return manifest.timings.get("acquire_seconds")
    return (end - start).total_seconds()


def _usb_path(extra: dict[str, Any]) -> str:
    """bus-port (and VID:PID, LUN) of a USB source, as imager.devices.usb records them."""
    port = extra.get("usb_port") or extra.get("usb_path") or ""
    if not port:
        return ""
    ids = f" {extra['vid']:04x}:{extra['pid']:04x}" if isinstance(extra.get("vid"), int) \
        and isinstance(extra.get("pid"), int) else ""
    lun = f" LUN {extra['lun']}" if "lun" in extra else ""
    return f"{port}{ids}{lun}"


def _source(src: dict[str, Any], sector_size: int, sector_count: int) -> dict[str, Any]:
    extra = dict(src.get("extra") or {})
    return {"kind": src.get("kind", ""), "path": src.get("path", ""),
            "device_node": extra.get("device", ""),
            "usb_path": _usb_path(extra),
            "model": src.get("model", ""), "serial": src.get("serial", ""),
            "size_bytes": src.get("size_bytes", sector_size * sector_count),
            "sector_size": src.get("sector_size", sector_size), "sector_count": sector_count,
            "disk_guid": src.get("disk_guid", ""), "extra": extra}


def build_report(manifest: Any, image_path: str, *, verification: Any = None,
                 protection: Any = None, reader: Any = None,
                 host: dict[str, str] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (layout: docs/REPORT.md).

    Args:
        manifest: the acquisition's Manifest.
        image_path: the image (first segment for E01).
        verification: a VerifyReport (imager.verify) or a dict, when verification ran.
        protection: an imager.writeblock.Protection (else the manifest's record is used).
        reader: the opened image, for format details (E01 segments and stored hashes).
        host: where the acquisition ran (else the manifest's record, else unknown).
    """
    table = manifest.table or {}
    ss, count = manifest.sector_size, manifest.sector_count
    options = manifest.options or {}
    return {
        "report_format": REPORT_FORMAT, "report_version": REPORT_VERSION,
        "generated": now_utc(),
        "generated_by": {"name": "imager", "version": __version__},
        "tool": {"name": manifest.tool_name, "version": manifest.tool_version},
        "command_line": list(manifest.command_line),
        "command_line_text": shlex.join(manifest.command_line),
        "host": host or options.get("host") or {},
        "case": _case(manifest.case),
        "times": {"started_utc": manifest.started, "finished_utc": manifest.finished,
                  "duration_seconds": _duration(manifest)},
        "image": _image(manifest, image_path, reader),
        "source": _source(manifest.source or {}, ss, count),
        "partition_table": partition_summary(table),
        "hashes": dict(manifest.hashes),
        "chunks": _chunks(manifest),
        "unread": locate_ranges(manifest.unread, table, ss),
        "unread_sectors": sum(c for _, c in manifest.unread),
        "not_acquired": locate_ranges(manifest.not_acquired, table, ss),
        "not_acquired_sectors": sum(c for _, c in manifest.not_acquired),
        "verification": _verification(verification),
        "write_protection": _protection(manifest, protection),
    }


def _image(manifest: Any, image_path: str, reader: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"path": os.path.abspath(image_path),
                            "format": manifest.image_format,
                            "size_bytes": manifest.sector_size * manifest.sector_count}
    segments = getattr(reader, "segments", None)
    if segments:
        info["segments"] = [os.path.abspath(p) for p in segments]
        info["stored_hashes"] = {k: v for k, v in (("md5", getattr(reader, "md5", None)),
                                                   ("sha1", getattr(reader, "sha1", None))) if v}
    return info


def partition_summary(table: dict[str, Any]) -> dict[str, Any]:
    """The table's kind, disk GUID, partitions (slot, name, LBA range, size, type), warnings."""
    if not table:
        return {"kind": "unknown", "partitions": [], "warnings": []}
    parts = [{k: p.get(k) for k in ("index", "name", "first_lba", "last_lba", "size_bytes",
                                     "type_name", "type_id", "unique_guid")}
             for p in table.get("partitions", [])]
    return {"kind": table.get("kind", ""), "disk_guid": table.get("disk_guid", ""),
            "primary_health": table.get("primary_health", ""),
            "backup_health": table.get("backup_health", ""),
            "partitions": parts, "warnings": list(table.get("warnings", []))}


def _areas(table: dict[str, Any]) -> list[tuple[int, int, str, int | None]]:
    """(first, end, name, slot) of every partition and table-metadata run, sorted."""
    areas = [(p["first_lba"], p["last_lba"] + 1, p.get("name") or f"partition {p['index']}",
              p.get("index")) for p in table.get("partitions", [])]
    areas += [(m["start_lba"], m["start_lba"] + m["count"], "(partition table)", None)
              for m in table.get("metadata_extents", [])]
    return sorted(areas)


def locate_ranges(ranges: Any, table: dict[str, Any], sector_size: int) -> list[dict[str, Any]]:
    """Each LBA range with the partitions it falls in, split at partition boundaries.

    A piece outside every partition is named "(partition table)" when it holds table data,
    else "(outside any partition)".
    """
    areas = _areas(table or {})
    out = []
    for start, count in ranges:
        pieces, pos, end = [], start, start + count
        for first, stop, name, slot in areas:
            if stop <= pos or first >= end:
                continue
            if first > pos:
                pieces.append(_piece(pos, first, "(outside any partition)", None))
            lo = max(first, pos)
            pieces.append(_piece(lo, min(stop, end), name, slot))
            pos = max(pos, min(stop, end))
        if pos < end:
            pieces.append(_piece(pos, end, "(outside any partition)", None))
        out.append({"start_lba": start, "count": count, "last_lba": end - 1,
                    "size_bytes": count * sector_size, "locations": pieces})
    return out


def _piece(start: int, end: int, name: str, slot: int | None) -> dict[str, Any]:
    return {"partition": name, "index": slot, "start_lba": start, "count": end - start,
            "last_lba": end - 1}


def report_path(image_path: str, suffix: str) -> str:
    """IMAGE.report.txt / IMAGE.report.json beside the image."""
    return f"{image_path}.report.{suffix}"


def write_report(manifest: Any, image_path: str, verification: Any = None, *,
                 protection: Any = None, reader: Any = None) -> list[str]:
    """Write IMAGE.report.txt and IMAGE.report.json beside an acquisition; return the paths.

    ``image_path`` for an E01 acquisition may be OUT or OUT.E01 (the first segment is used).
    Called right after acquiring, so the host is this machine unless the manifest says so.
    """
    from imager.report_text import render_text

    if manifest.image_format == "e01" and not image_path.lower().endswith(".e01"):
        image_path += ".E01"
    if reader is None and manifest.image_format == "e01":
        from imager.image.ewf import EwfReader

        with contextlib.closing(EwfReader(image_path)) as opened:
            return write_report(manifest, image_path, verification, protection=protection,
                                reader=opened)
    report = build_report(manifest, image_path, verification=verification,
                          protection=protection, reader=reader,
                          host=(manifest.options or {}).get("host") or host_info())
    paths = []
    for suffix, text in (("txt", render_text(report)), ("json", to_json(report))):
        path = report_path(image_path, suffix)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        paths.append(path)
    return paths


def to_json(report: dict[str, Any]) -> str:
    """Stable JSON text: sorted keys, 2-space indent, UTF-8 kept readable."""
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def report_for_reader(reader: Any, image_path: str, verification: Any = None) -> dict[str, Any]:
    """The report of an opened image: from its manifest, or from what the image stores."""
    manifest = getattr(reader, "manifest", None)
    if manifest is None:
        manifest = manifest_from_reader(reader)
    return build_report(manifest, image_path, verification=verification, reader=reader)


def manifest_from_reader(reader: Any) -> Manifest:
    """A Manifest describing an image made by another tool (an ewfacquire E01, a raw file).

    Case metadata and times come from the E01 header, unread ranges from its error2 section,
    the partition table is read from the image itself.
    """
    header = getattr(reader, "header", None)
    extents = reader.extents() if hasattr(reader, "extents") else []
    case, source, started, tool = {}, {}, "", ("unknown", "")
    if header is not None:
        case = {"case_number": header.case_number, "evidence_number": header.evidence_number,
                "examiner": header.examiner, "description": header.description,
                "notes": header.notes}
        source = {"kind": "unknown", "path": "", "model": header.model,
                  "serial": header.serial}
        if header.acquired is not None:
            started = datetime.datetime.fromtimestamp(
                header.acquired, datetime.timezone.utc).isoformat(timespec="seconds")
        tool = (f"unknown (from the EWF header; platform {header.platform})", header.version)
    per = reader.chunk_sectors
    return Manifest(
        sector_size=reader.sector_size, sector_count=reader.sector_count, chunk_sectors=per,
        chunk_runs=(KindRun(0, -(-reader.sector_count // per), Kind.DATA),), chunk_checks=(),
        chunk_check="adler32", hashes=dict(getattr(reader, "hashes", {}) or {}),
        source=source, table=_table_of(reader), case=case, started=started,
        unread=tuple((e.start_lba, e.count) for e in extents if e.kind is Kind.UNREAD),
        not_acquired=tuple((e.start_lba, e.count) for e in extents
                           if e.kind is Kind.NOT_ACQUIRED),
        tool_name=tool[0], tool_version=tool[1], image_format=_format_name(reader))


def _format_name(reader: Any) -> str:
    return {"EwfReader": "e01", "RawReader": "raw", "SparseReader": "simg",
            "NativeReader": "native"}.get(type(reader).__name__, type(reader).__name__)


def _table_of(reader: Any) -> dict[str, Any]:
    from imager.image.source import ImageAsSource
    from imager.table import read_table

    try:
        return read_table(ImageAsSource(reader)).to_dict()
    except (FormatError, ImagerError) as err:
        log.info("no partition table in the image: %s", err)
        return {}


__all__ = ["build_report", "host_info", "report_for_reader", "report_path", "to_json",
           "write_report"]
