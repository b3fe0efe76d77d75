"""``imager rescue SOURCE OUT --mapfile MAP``: ddrescue-style rescue of a failing device."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import stat
import sys
from pathlib import Path

from formats.mapfile import Status
from imager.cli._args import sector_size
from imager.devices import SCHEMES, open_source
from imager.devices.base import BaseSource
from imager.errors import BadInput, UsageError
from imager.rescue import RescueOptions, RescueProgress, rescue

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "s": 0}


def _size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", text.strip())
    if not match or match.group(2).lower() not in _UNITS or match.group(2).lower() == "s":
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 65536, 64KiB, 1MiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rescue", help="rescue a failing device into a sparse raw file + GNU ddrescue mapfile",
        description="Copy what can be read of SOURCE into OUT (sparse raw file) in passes: "
                    "copy, trim, scrape, retry. State lives in a GNU ddrescue mapfile, so a "
                    "rescue can be continued by imager or by GNU ddrescue (and vice versa).")
    p.add_argument("source", metavar="SOURCE", help="device, image file, or SCHEME:... spec")
    p.add_argument("out", metavar="OUT", help="raw output file (created sparse, never truncated)")
    p.add_argument("--mapfile", required=True, type=Path, metavar="MAP",
                   help="GNU ddrescue mapfile holding the state (created when missing)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="retry passes over bad sectors (ddrescue -r)")
    p.add_argument("--reverse", action="store_true", help="read backwards (ddrescue -R)")
    p.add_argument("--block-size", type=_size, default=64 * 1024, metavar="BYTES",
                   help="read size of the copying passes (default 64KiB)")
    p.add_argument("--sector-size", type=sector_size, default=None, metavar="BYTES",
                   help="sector size for image files (block devices report their own)")
    p.add_argument("--skip-size", type=_size, default=64 * 1024, metavar="BYTES",
                   help="first skip after a read error, doubling on each further one; 0: none")
    p.add_argument("--no-trim", action="store_true", help="skip the trimming phase (-N)")
    p.add_argument("--no-scrape", action="store_true", help="skip the scraping phase (-n)")
    p.add_argument("--wait-reconnect", type=float, default=0.0, metavar="SECONDS",
                   help="when the source vanishes, wait this long for the same device to return")
    p.add_argument("--save-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often the mapfile is saved (always at phase ends and on exit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--finish", action="store_true",
                   help="instead of rescuing: SOURCE is a rescued raw file, OUT the native "
                        "image to write; sectors not rescued per MAP become UNREAD ranges")
    p.set_defaults(func=run)


def _opener(spec: str, sector_size: int | None):
    def open_it() -> BaseSource:
        head, sep, _ = spec.partition(":")
        if sep and head in SCHEMES:
            return open_source(spec, sector_size=sector_size)
        from imager.devices.file import DirectFileSource

        return DirectFileSource(spec, sector_size=sector_size)
    return open_it


def _progress_bar(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)

    def update(p: RescueProgress) -> None:
        bar.n = p.rescued_bytes
        phase = p.phase_name if p.phase == "+" else f"{p.phase_name} pass {p.pass_no}"
        bar.set_description_str(phase, refresh=False)
        bar.set_postfix_str(f"bad {p.bad_bytes} B, non-tried {p.non_tried_bytes} B, "
                            f"errors {p.error_rate:.1%}", refresh=False)
        bar.update(0)
    return update, bar


def _finish(args: argparse.Namespace) -> int:
    from imager.rescue_finish import finish

    bar = None
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5, desc="finish")

        def progress(done: int, total: int, label: str) -> None:
            bar.total, bar.n = total, done
            bar.update(0)
    try:
        manifest = finish(args.source, args.mapfile, args.out,
                          sector_size=args.sector_size or 512, progress=progress,
                          command_line=tuple(sys.argv))
    finally:
        if bar is not None:
            bar.close()
    unread = sum(count for _, count in manifest.unread) * manifest.sector_size
    print(f"wrote {args.out}: {manifest.sector_count * manifest.sector_size} B, "
          f"{unread} B unread in {len(manifest.unread)} range(s)")
    return 0


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether paths ``a`` and ``b`` name one file or device (symlinks, ./x, by-id links)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:  # one of them does not exist yet: not the same
        return False
    if stat.S_ISBLK(sa.st_mode) and stat.S_ISBLK(sb.st_mode):
        return sa.st_rdev == sb.st_rdev
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a SOURCE that does not exist, and OUT or MAP that are the SOURCE or each other."""
    head, sep, _ = args.source.partition(":")
    if not (sep and head in SCHEMES) and not os.path.lexists(args.source):
        raise BadInput(f"{args.source}: no such file or device")
    if _same_file(args.out, args.source):
        raise UsageError(f"OUT {args.out} is the SOURCE {args.source}")
    for other, what in ((args.source, "SOURCE"), (args.out, "OUT")):
        if _same_file(args.mapfile, other):
            raise UsageError(f"--mapfile {args.mapfile} is the {what}")
    # the mapfile is first saved after the copy pass has run for a while: refuse a place it
    # cannot be written now, not after hours of reading a dying device
    where = os.path.dirname(os.path.abspath(args.mapfile))
    if not os.path.isdir(where):
        raise BadInput(f"--mapfile {args.mapfile}: directory {where} does not exist")
    if not os.access(where, os.W_OK):
        raise BadInput(f"--mapfile {args.mapfile}: directory {where} is not writable")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.finish:
        return _finish(args)
    if args.retries < 0:
        raise UsageError(f"--retries {args.retries}: must be >= 0")
    _check_paths(args)
    opener = _opener(args.source, args.sector_size)
    source = opener()
    if source.sector_count == 0:
        source.close()
        raise BadInput(f"{args.source}: truncated to 0 bytes (empty): nothing to rescue")
    if args.block_size <= 0 or args.block_size % source.sector_size:
        source.close()
        raise UsageError(f"--block-size {args.block_size} is not a positive multiple of the "
                         f"{source.sector_size}-byte sector size")
    command = "imager rescue " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 2 and sys.argv[1] == "rescue" else ""
    opts = RescueOptions(block_size=args.block_size, retries=args.retries, reverse=args.reverse,
                         trim=not args.no_trim, scrape=not args.no_scrape,
                         skip_size=args.skip_size, wait_reconnect=args.wait_reconnect,
                         save_interval=args.save_interval, command=command)
    callback, bar = (None, None) if args.no_progress else _progress_bar(source.size_bytes)
    # SIGTERM (kill, systemd, a closing terminal) saves the state like Ctrl-C, as ddrescue does
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        totals = rescue(source, Path(args.out), args.mapfile, opts, callback, reopen=opener)
    finally:
        signal.signal(signal.SIGTERM, previous)
        source.close()
        if bar is not None:
            bar.close()
    bad = totals[Status.BAD_SECTOR] + totals[Status.NON_TRIMMED] + totals[Status.NON_SCRAPED]
    print(f"rescued {totals[Status.FINISHED]} B, bad {bad} B, "
          f"non-tried {totals[Status.NON_TRIED]} B of {source.size_bytes} B "
          f"(mapfile {args.mapfile})")
    return 0  # as ddrescue: finishing with bad sectors is a successful rescue
