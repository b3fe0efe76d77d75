"""``imager check REPO [--read-data]``: verify a repository (indexes, packs, snapshots, chunks)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("check", help="verify a snapshot repository",
                              description="Verify every pack index, pack and snapshot of REPO; "
                              "with --read-data also decompress every chunk and check its "
                              "sha256. Exit 0 when clean, 3 when anything is damaged.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--read-data", action="store_true", help="read and verify every chunk")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imager.repo.check import check
    from imager.repo.store import Repository
    from imager.repo.text import human_bytes

    repo = Repository(args.repo)
    bar = None
    if args.read_data and not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        total = sum(e.record_size for i in repo.pack_indexes.values() for e in i.entries)
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="check")
    try:
        report = check(repo, read_data=args.read_data, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    for note in report.notes:
        print(f"note: {note}")
    for err in report.errors:
        print(f"error: {err}")
    what = f", {human_bytes(report.bytes_read)} of chunks read and verified" if args.read_data else ""
    print(f"{report.snapshots} snapshot(s), {report.packs} pack(s), {report.chunks} chunk(s){what}: "
          + ("no errors" if report.ok else f"{len(report.errors)} error(s)"))
    return 0 if report.ok else 3
