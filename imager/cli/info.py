"""``imager info SOURCE [--json] [--sector-size N]``: what partition table a device or image holds.

SOURCE is a device, an image file (raw, native, Android sparse, E01) or any spec
``imager.devices.open_source`` accepts. Partition names come from the device: they are data and
are printed with every control character escaped.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from formats.table import DiskTable
from imager.cli._args import sector_size
from imager.devices import open_source
from imager.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info", help="show the partition table of a device or image",
        description="Show the partition table of SOURCE: type, sector size and count, disk "
        "GUID, health of the primary and backup GPT, every partition and the unallocated "
        "gaps. SOURCE is a block device, a raw/native/sparse/E01 image, or a device spec.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.add_argument("--sector-size", type=sector_size, default=None, metavar="N",
                   help="logical sector size of an image file (default: probe 512 and 4096)")
    p.add_argument("--loader", metavar="FILE",
                   help="edl: the phone's Firehose programmer (uploaded through Sahara)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imager.table import read_table

    source = _open(args.source, args.sector_size, getattr(args, "loader", None))
    try:
        table = read_table(source)
        if table.detected_sector_size and args.sector_size is None \
                and source.identity.kind == "file":
            # a 4Kn image opened as 512: show the table in its own units
            _close(source)
            source = open_source(args.source, sector_size=table.detected_sector_size)
            table = read_table(source)
    finally:
        _close(source)
    if args.json:
        print(json.dumps({"source": args.source, **table.to_dict()}, indent=2))
    else:
        print("\n".join(render(args.source, table)))
    return 0


def _open(spec: str, sector_size: int | None, loader: str | None = None) -> Any:
    """A Source for ``spec``: images (non-raw) through their reader, the rest as devices."""
    from imager.image.open import detect

    if os.path.isfile(spec) or ("@" in spec and not os.path.exists(spec)):
        kind = detect(spec)
        if kind != "raw":
            try:
                from imager.image.open import open_image
                from imager.image.source import ImageAsSource

                return ImageAsSource(open_image(spec), spec)
            except ImportError as err:
                raise UsageError(f"{spec}: {kind} images cannot be read yet ({err})") from err
    if not os.path.exists(spec) and ":" not in spec and spec != "-":
        raise UsageError(f"{spec}: no such file or device")
    if spec.startswith("edl:"):
        return open_source(spec, sector_size=sector_size, loader=loader)
    if loader:
        raise UsageError("--loader is for edl: sources")
    return open_source(spec, sector_size=sector_size)


def _close(source: Any) -> None:
    source.close()
    reader = getattr(source, "reader", None)  # an ImageAsSource owns its image reader
    if reader is not None:
        reader.close()


def safe(text: str) -> str:
    """``text`` with backslashes and every non-printable character escaped (one line)."""
    return "".join(ch if ch.isprintable() and ch != "\\" else
                   ("\\\\" if ch == "\\" else repr(ch)[1:-1]) for ch in text)


def human(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _summary(spec: str, t: DiskTable) -> list[str]:
    ss = t.sector_size
    mbr = f" ({t.mbr_kind} MBR)" if t.kind == "gpt" else \
        " (no partition records)" if t.mbr_kind == "empty" else ""
    own = f" (the table uses {t.detected_sector_size})" if t.detected_sector_size else ""
    lines = [f"Source:       {safe(spec)}",
             f"Table:        {t.kind}{mbr}",
             f"Sector size:  {ss}{own}",
             (f"Sectors:      {t.sector_count} ({human(t.sector_count * ss)}, "
              f"{t.sector_count * ss} bytes)")]
    if t.disk_guid:
        lines.append(f"Disk ID:      {safe(t.disk_guid)}")
    if t.kind == "gpt":
        lines += [f"Primary GPT:  {safe(t.primary_health)}",
                  f"Backup GPT:   {safe(t.backup_health)}",
                  f"Usable LBAs:  {t.first_usable_lba}..{t.last_usable_lba}"]
    return lines


def _partition_rows(t: DiskTable) -> list[list[str]]:
    rows = [["#", "Name", "First LBA", "Last LBA", "Size", "Bytes", "Type", "Attributes"]]
    for p in t.partitions:
        size = p.count_sectors * t.sector_size
        kind = f"{p.type_id} ({p.type_name})" if p.type_name else p.type_id
        attrs = f"{p.attributes:#x} " + ",".join(p.attribute_names) if p.attributes else ""
        name = safe(p.name) if p.name else f"-{' (' + p.role + ')' if p.role != 'gpt' else ''}"
        rows.append([str(p.index), name, str(p.first_lba), str(p.last_lba), human(size),
                     str(size), safe(kind), attrs.strip()])
    return rows


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 2, 3, 4, 5}
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def render(spec: str, t: DiskTable) -> list[str]:
    """The human-readable report, one string per line (no line holds raw device text)."""
    lines = _summary(spec, t)
    if t.partitions:
        lines += ["", *_columns(_partition_rows(t))]
    elif t.kind == "none":
        lines += ["", "No partition table."]
    if t.gaps:
        lines += ["", "Unallocated:"]
        lines += [f"  {a}..{b}  {b - a + 1} sectors ({human((b - a + 1) * t.sector_size)})"
                  for a, b in t.gaps]
    lines += [f"warning: {safe(w)}" for w in t.warnings]
    return lines
