"""The text form of the acquisition report (imager.report): what goes into a case file."""

from __future__ import annotations

from typing import Any

WIDTH = 78


def _size(n: int | None) -> str:
    if n is None:
        return ""
    value, unit = float(n), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{n} bytes" if unit == "bytes" else f"{n} bytes ({value:.2f} {unit})"


def _safe(value: Any) -> str:
    """``value`` on one line with control characters escaped: partition names, models and
    serials come from the device, and a newline or ESC sequence must not forge report lines
    or drive the terminal that prints the report."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _section(title: str, rows: list[tuple[str, Any]]) -> list[str]:
    lines = ["", title, "-" * len(title)]
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        lines.append(f"{key + ':':<{width + 1}} {_safe(value)}")
    return lines


def _ranges(title: str, ranges: list[dict[str, Any]], total: int) -> list[str]:
    lines = ["", title, "-" * len(title)]
    if not ranges:
        return lines + ["none"]
    lines.append(f"{len(ranges)} range(s), {total} sector(s):")
    for r in ranges:
        lines.append(f"  LBA {r['start_lba']}-{r['last_lba']} ({r['count']} sectors, "
                     f"{r['size_bytes']} bytes)")
        for p in r["locations"]:
            slot = f" #{p['index']}" if p["index"] is not None else ""
            lines.append(f"    {_safe(p['partition'])}{slot}: LBA {p['start_lba']}-{p['last_lba']} "
                         f"({p['count']} sectors)")
    return lines


def _partitions(table: dict[str, Any]) -> list[str]:
    lines = ["", "Partition table", "---------------", f"Kind: {table.get('kind', '')}"]
    if table.get("disk_guid"):
        lines.append(f"Disk GUID: {table['disk_guid']}")
    for key in ("primary_health", "backup_health"):
        if table.get(key):
            lines.append(f"{key.replace('_', ' ').capitalize()}: {table[key]}")
    for p in table.get("partitions", []):
        lines.append(f"  #{p['index']:<3} {_safe(p['name']) or '-':<20} LBA {p['first_lba']}-"
                     f"{p['last_lba']}  {_size(p.get('size_bytes'))}  "
                     f"{_safe(p.get('type_name'))}")
    lines += [f"  warning: {_safe(w)}" for w in table.get("warnings", [])]
    return lines


def _verification(v: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("Result", v.get("result", "not run"))]
    if v.get("when"):
        rows.append(("When (UTC)", v["when"]))
    if "chunks_checked" in v:
        rows.append(("Chunks checked", v["chunks_checked"]))
        rows.append(("Bad chunks", len(v.get("bad_chunks", []))))
    for bad in v.get("bad_chunks", []):
        rows.append((f"  chunk {bad['chunk']}", (f"LBA {bad['start_lba']}+{bad['count']}: "
                                                f"{bad['reason']}")))
    for name, value in sorted(v.get("hashes_actual", {}).items()):
        rows.append((f"{name.upper()} recomputed", value))
    return rows


def _acquisition(report: dict[str, Any]) -> list[tuple[str, Any]]:
    times, host = report["times"], report.get("host") or {}
    return [("Tool", f"{report['tool']['name']} {report['tool']['version']}".strip()),
            ("Command line", report["command_line_text"]),
            ("Host", " ".join(filter(None, (host.get("hostname"), host.get("system"),
                                            host.get("release"), host.get("machine"))))),
            ("Started (UTC)", times["started_utc"]), ("Finished (UTC)", times["finished_utc"]),
            ("Duration (s)", times["duration_seconds"]),
            ("Write protection", report["write_protection"].get("text", ""))]


def _source(src: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("Kind", src["kind"]), ("Path", src["path"]), ("Device node", src["device_node"]),
            ("USB path", src["usb_path"]), ("Model", src["model"]), ("Serial", src["serial"]),
            ("Capacity", _size(src["size_bytes"])), ("Sector size", src["sector_size"]),
            ("Sector count", src["sector_count"]), ("Disk GUID", src["disk_guid"])]


def _image(img: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [("Path", img["path"]), ("Format", img["format"]),
            ("Media size", _size(img["size_bytes"]))]
    rows += [(f"Segment {i}", p) for i, p in enumerate(img.get("segments", []), start=1)]
    rows += [(f"{k.upper()} stored in image", v)
             for k, v in sorted(img.get("stored_hashes", {}).items())]
    return rows


def _chunks(chunks: dict[str, Any]) -> list[tuple[str, Any]]:
    by_kind = ", ".join(f"{k} {v}" for k, v in chunks["by_kind"].items() if v)
    return [("Chunk size (sectors)", chunks["chunk_sectors"]),
            ("Chunks", f"{chunks['count']} ({by_kind})"),
            ("Check algorithm", chunks["check_algorithm"]),
            ("DATA chunks with a check value", chunks["data_chunks_with_check"])]


def render_text(report: dict[str, Any]) -> str:
    """The report as plain text (ASCII layout, UTF-8 values kept)."""
    case = report["case"]
    lines = ["IMAGER ACQUISITION REPORT", "=" * WIDTH,
             f"Report generated (UTC): {report['generated']} by imager "
             + report["generated_by"]["version"]]
    lines += _section("Case", [("Case number", case["case_number"]),
                               ("Evidence number", case["evidence_number"]),
                               ("Examiner", case["examiner"]),
                               ("Description", case["description"]), ("Notes", case["notes"])])
    lines += _section("Acquisition", _acquisition(report))
    lines += _section("Source", _source(report["source"]))
    lines += _partitions(report["partition_table"])
    lines += _section("Image", _image(report["image"]))
    lines += _section("Hashes (of the acquired data)",
                      [(k.upper(), v) for k, v in sorted(report["hashes"].items())])
    lines += _section("Chunks", _chunks(report["chunks"]))
    lines += _ranges("Unread sectors (stored as zeros)", report["unread"],
                     report["unread_sectors"])
    lines += _ranges("Not acquired sectors (excluded, stored as zeros)",
                     report["not_acquired"], report["not_acquired_sectors"])
    lines += _section("Verification", _verification(report["verification"]))
    return "\n".join(lines) + "\n"
