"""``imager show IMAGE [--json]``: what an image says about itself."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("show", help="manifest summary: source, partitions, hashes, "
                                           "unread ranges")
    p.add_argument("image", help="any image (native, raw, simg, E01, REPO@ID)")
    p.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    p.set_defaults(func=run)


def _kinds(reader: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk in reader.chunks():
        out[chunk.extent.kind.value] = out.get(chunk.extent.kind.value, 0) + 1
    return out


def run(args: argparse.Namespace) -> int:
    from imager.image.open import detect, open_image
    from imager.partitions import image_partitions

    with contextlib.closing(open_image(args.image)) as reader:
        manifest = getattr(reader, "manifest", None)
        parts = image_partitions(reader)
        if args.json:
            obj = manifest.to_dict() if manifest is not None and hasattr(manifest, "to_dict") \
                else {}
            obj.pop("table_sectors", None)
            obj.pop("chunk_checks", None)
            obj.update({"image": args.image, "detected_format": detect(args.image),
                        "sector_size": reader.sector_size, "sector_count": reader.sector_count,
                        "chunk_kinds": _kinds(reader),
                        "partitions": [vars(p) | {"count_sectors": p.count_sectors}
                                       for p in parts]})
            print(json.dumps(obj, indent=2, sort_keys=True, default=str))
            return 0
        _text(args.image, detect(args.image), reader, manifest, parts)
    return 0


def _text(path: str, fmt: str, reader: Any, m: Any, parts: list[Any]) -> None:
    size = reader.sector_count * reader.sector_size
    print(f"image:        {path} ({fmt})")
    print(f"size:         {size} bytes = {reader.sector_count} x {reader.sector_size}-byte "
          f"sectors, chunks of {reader.chunk_sectors} sectors")
    print(f"chunks:       {', '.join(f'{n} {k}' for k, n in _kinds(reader).items())}")
    if m is not None and hasattr(m, "source"):
        src = m.source
        print(f"source:       {src.get('path', '')} {src.get('kind', '')} model={src.get('model', '')!r} "
              f"serial={src.get('serial', '')!r}")
        print(f"tool:         {m.tool_name} {m.tool_version}, format {m.version[0]}.{m.version[1]}")
        print(f"time:         {m.started} .. {m.finished}")
        for key, value in m.case.items():
            print(f"{key + ':':13} {value}")
        for name, value in m.hashes.items():
            print(f"{name + ':':13} {value}")
        for label, ranges in (("unread", m.unread), ("not acquired", m.not_acquired)):
            total = sum(c for _, c in ranges)
            print(f"{label + ':':13} {total} sectors" + "".join(
                f"\n  LBA {s}-{s + c - 1} ({c})" for s, c in ranges[:50]))
    else:
        _foreign(reader)
    if parts:
        print(f"partitions:   {len(parts)}")
        for p in parts:
            print(f"  {p.first_lba:>12} {p.last_lba:>12} {p.count_sectors * reader.sector_size:>14}"
                  f"  {p.name!r}")


def _foreign(reader: Any) -> None:
    """What an image made by another tool records about itself (E01 header, stored hashes)."""
    header = getattr(reader, "header", None)
    if not hasattr(header, "case_number"):  # only E01 headers hold case data (not simg's)
        header = None
    hashes = getattr(reader, "hashes", None) or {}
    if header is None and not hashes:
        print("manifest:     none (no check values or hashes recorded)")
        return
    if header is not None:
        for label, value in (("case", header.case_number), ("evidence", header.evidence_number),
                             ("examiner", header.examiner), ("description", header.description),
                             ("notes", header.notes), ("model", header.model),
                             ("serial", header.serial), ("tool", header.version)):
            if value:
                print(f"{label + ':':13} {value!r}")
    for name, value in hashes.items():
        print(f"{name + ':':13} {value} (stored in the image)")
