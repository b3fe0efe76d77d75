"""``imager snapshots REPO``: list the snapshots of a repository."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("snapshots", help="list the snapshots of a repository",
                              description="List the snapshots in REPO, oldest first.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    from imager.repo.text import device_of

    return {"id": doc["id"], "time": doc["time"], "device": device_of(doc),
            "size_bytes": doc["sector_count"] * doc["sector_size"],
            "new_bytes": doc.get("stats", {}).get("new_bytes", 0), "tags": doc.get("tags", [])}


def run(args: argparse.Namespace) -> int:
    from imager.repo.snapshot import list_snapshots
    from imager.repo.store import Repository
    from imager.repo.text import human_bytes

    repo = Repository(args.repo)
    rows = [_row(d) for d in list_snapshots(repo)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'ID':8}  {'TIME':20}  {'SIZE':>10}  {'NEW':>10}  DEVICE / TAGS")
    for r in rows:
        tags = f"  [{', '.join(r['tags'])}]" if r["tags"] else ""
        print(f"{r['id']:8}  {r['time']:20}  {human_bytes(r['size_bytes']):>10}  "
              f"{human_bytes(r['new_bytes']):>10}  {r['device']}{tags}")
    print(f"{len(rows)} snapshot(s)")
    return 0
