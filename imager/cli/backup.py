"""``imager backup SOURCE REPO``: a deduplicated snapshot of a device in a repository."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EPILOG = """exit codes: 0 ok, 1 runtime failure (e.g. the repository is locked), 2 usage/bad
input, 130 interrupted (run the same backup again: chunks already stored are reused)"""


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("backup", help="add a deduplicated snapshot of a device to a "
                              "repository", epilog=EPILOG,
                              description="Read SOURCE through the acquire pipeline and store "
                              "it as a snapshot in REPO (a directory, created on first use), "
                              "keeping only chunks the repository does not hold yet.")
    p.add_argument("source", metavar="SOURCE", help="device, image file, '-' or usb-msc:/edl:")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--partition", action="append", default=[], metavar="NAME",
                   help="back up only this partition (glob, repeatable; tables always kept)")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="leave this partition out (glob, repeatable; stored as NOT_ACQUIRED)")
    p.add_argument("--tag", action="append", default=[], metavar="TEXT",
                   help="label the snapshot (repeatable)")
    p.add_argument("--chunk-size", type=_size, metavar="BYTES",
                   help="chunk size of a NEW repository (default 4M, as acquire)")
    p.add_argument("--sector-size", type=int, help="sector size of an image file (default 512)")
    p.add_argument("--workers", type=int, default=2, help="hash/compress threads (default 2)")
    p.add_argument("--break-lock", action="store_true",
                   help="remove a stale lock left by a process that died")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from imager.repo.backup import BackupRequest, run_backup
    from imager.repo.text import human_bytes

    req = BackupRequest(args.source, args.repo, tuple(args.partition), tuple(args.exclude),
                        tuple(args.tag), args.chunk_size, args.sector_size,
                        workers=max(1, args.workers), break_lock=args.break_lock,
                        command_line=tuple(sys.argv))
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="backup")
    try:
        doc = run_backup(req, progress=_progress(bar) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    stats = doc["stats"]
    if args.json:
        print(json.dumps({"id": doc["id"], "time": doc["time"], **stats,
                          "size_bytes": doc["sector_count"] * doc["sector_size"]}, indent=1))
        return 0
    print(f"snapshot {doc['id']} of {human_bytes(doc['sector_count'] * doc['sector_size'])} "
          f"saved to {args.repo}")
    print(f"  {stats['data_chunks']} data chunk(s), {stats['new_chunks']} new; "
          f"new bytes stored: {stats['new_bytes']} ({human_bytes(stats['new_bytes'])})")
    return 0


def _progress(bar: Any) -> Any:
    def update(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(label, refresh=False)
        bar.refresh()
    return update
