"""``imager prune REPO --keep-last N ...``: apply a retention policy and free unused chunks."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("prune", help="apply a retention policy, then free unused chunks",
                              description="Keep the snapshots the --keep-* rules select and "
                              "remove the others, then delete every chunk no snapshot uses. "
                              "Without any --keep-* rule no snapshot is removed (only garbage "
                              "left by forget or interrupted runs is collected).")
    for name, what in (("last", "the N newest snapshots"),
                       ("daily", "the newest snapshot of each of the last N days (UTC)"),
                       ("weekly", "the newest snapshot of each of the last N ISO weeks"),
                       ("monthly", "the newest snapshot of each of the last N months")):
        p.add_argument(f"--keep-{name}", type=int, default=0, metavar="N", help=f"keep {what}")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed")
    p.add_argument("--break-lock", action="store_true",
                   help="remove a stale lock left by a process that died")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imager.errors import UsageError
    from imager.repo.gc import collect_garbage, forget, select_keep
    from imager.repo.lock import locked
    from imager.repo.snapshot import list_snapshots
    from imager.repo.store import Repository
    from imager.repo.text import human_bytes

    rules = {k: getattr(args, f"keep_{k}") for k in ("last", "daily", "weekly", "monthly")}
    if any(v < 0 for v in rules.values()):
        raise UsageError("--keep-* values must be >= 0")
    repo = Repository(args.repo)
    with locked(repo.path, shlex.join(sys.argv), args.break_lock):
        repo.reload_index()
        docs = list_snapshots(repo, strict=True)
        keep = select_keep(docs, **rules) if any(rules.values()) else {d["id"]: ["no rule"] for d in docs}
        drop = [d["id"] for d in docs if d["id"] not in keep]
        for doc in docs:
            why = ", ".join(keep.get(doc["id"], [])) or "remove"
            print(f"{'keep  ' if doc['id'] in keep else 'remove'} {doc['id']}  {doc['time']}  ({why})")
        if args.dry_run:
            return 0
        forget(repo, drop)
        report = collect_garbage(repo)
    print(f"removed {len(drop)} snapshot(s), {report.chunks_removed} chunk(s); "
          f"{report.packs_deleted} pack(s) deleted, {report.packs_rewritten} rewritten, "
          f"{human_bytes(report.bytes_freed - report.bytes_written)} freed")
    return 0
