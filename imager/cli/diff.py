"""``imager diff REPO@A REPO@B``: which partitions changed between two snapshots, and by how much."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("diff", help="compare two snapshots partition by partition",
                              description="Show which partitions (from the snapshot's table) "
                              "changed between snapshot A and B, and how many bytes "
                              "(counted in whole chunks).")
    p.add_argument("a", metavar="REPO@A")
    p.add_argument("b", metavar="REPO@B")
    p.add_argument("--all", action="store_true", help="also list unchanged partitions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _load(spec: str) -> dict[str, Any]:
    from imager.repo.snapshot import resolve, split_ref
    from imager.repo.store import Repository

    repo, ref = split_ref(spec)
    return resolve(Repository(repo), ref)


def run(args: argparse.Namespace) -> int:
    from imager.repo.diff import diff
    from imager.repo.text import human_bytes

    a, b = _load(args.a), _load(args.b)
    rows = diff(a, b)
    ss = b["sector_size"]
    if args.json:
        print(json.dumps({"a": a["id"], "b": b["id"], "partitions": [
            {"name": r.name, "first_lba": r.first_lba, "size_bytes": r.size_sectors * ss,
             "changed_bytes": r.changed_sectors * ss} for r in rows]}, indent=1))
        return 0
    total = sum(r.changed_sectors for r in rows) * ss
    print(f"snapshot {a['id']} ({a['time']}) -> {b['id']} ({b['time']}): "
          f"{human_bytes(total)} changed")
    for r in rows:
        if r.changed_sectors or args.all:
            pct = 100.0 * r.changed_sectors / r.size_sectors if r.size_sectors else 0.0
            print(f"  {r.name:24} {human_bytes(r.changed_sectors * ss):>10} changed of "
                  f"{human_bytes(r.size_sectors * ss):>10} ({pct:.1f} %)")
    return 0
