"""``imager forget REPO ID...``: remove snapshots and the chunks nothing references any more."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("forget", help="remove snapshots from a repository",
                              description="Remove the named snapshots (ids or unique id "
                              "prefixes, or 'latest'), then the chunks no snapshot uses.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("ids", metavar="ID", nargs="+")
    p.add_argument("--no-prune", action="store_true",
                   help="only remove the snapshots; leave their chunks for a later prune")
    p.add_argument("--break-lock", action="store_true",
                   help="remove a stale lock left by a process that died")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imager.repo.gc import collect_garbage, forget
    from imager.repo.lock import locked
    from imager.repo.store import Repository
    from imager.repo.text import human_bytes

    repo = Repository(args.repo)
    with locked(repo.path, shlex.join(sys.argv), args.break_lock):
        repo.reload_index()
        removed = forget(repo, args.ids)
        for snap_id in removed:
            print(f"removed snapshot {snap_id}")
        if not args.no_prune:
            report = collect_garbage(repo)
            print(f"pruned {report.chunks_removed} chunk(s): {report.packs_deleted} pack(s) "
                  f"deleted, {report.packs_rewritten} rewritten, "
                  f"{human_bytes(report.bytes_freed - report.bytes_written)} freed")
    return 0
