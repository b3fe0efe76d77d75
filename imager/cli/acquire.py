"""``imager acquire SOURCE IMAGE``: stream a device into a verifiable, resumable image."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from typing import Any

from imager.cli._args import sector_size
from imager.errors import DeviceError, DeviceGone, Interrupted, UsageError

EPILOG = """\
Re-running the same command after an interruption (Ctrl-C, kill, unplug) resumes: the image's
committed chunks are kept and checked, and the result equals an uninterrupted run. Another source
or changed options are refused. Reading from stdin ('-', with --size) cannot resume.
"""


def parse_size(text: str) -> int:
    """'4M', '4MiB', '512k', '1G' or plain bytes."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(num) * units[unit]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "acquire", help="image a device (or file, or stdin) into a native/raw image",
        description="Acquire SOURCE (block device, image file, '-' for stdin, or a USB spec) "
                    "into IMAGE.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="device, file, '-' (stdin: needs --size, not resumable), "
                                  "or usb-msc:/edl:/fastboot: spec")
    p.add_argument("image", help="the image to write")
    p.add_argument("--format", choices=("native", "raw", "simg", "e01"), default="native",
                   help="native: seekable zstd image (default); raw: sparse raw + IMAGE.json; "
                        "simg: Android sparse image + IMAGE.json (not resumable); "
                        "e01: EnCase 6 E01 set IMAGE.E01, IMAGE.E02, ...")
    p.add_argument("--segment-size", type=parse_size, metavar="BYTES",
                   help="e01: maximum size of each segment file (default 1.4GiB, min 1MiB)")
    p.add_argument("--write-block", action="store_true",
                   help="set the kernel read-only flag (BLKROSET) on the source block device "
                        "for the whole acquisition; the previous value is restored after")
    p.add_argument("--partition", action="append", default=[], metavar="NAME",
                   help="acquire only this partition (glob, repeatable); tables always included")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="skip this partition (glob, repeatable): recorded as NOT_ACQUIRED")
    p.add_argument("--hash", action="append", default=[],
                   help="whole-image hashes: md5,sha1,sha256 (repeatable; default sha256)")
    p.add_argument("--chunk-size", type=parse_size, default=4 << 20, help="default 4MiB")
    # level 1 by measurement (docs/BENCHMARKS.md): 18% less compression CPU than 3 for 0.3%
    # more bytes on the sample phone (encrypted/random data does not compress at any level)
    p.add_argument("--level", type=int, default=1, help="zstd level (default 1)")
    for name in ("case", "evidence", "examiner", "notes", "description"):
        p.add_argument(f"--{name}", default="", help=f"{name} (recorded in the manifest)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted acquisition")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("--size", type=parse_size, help="stream size in bytes (stdin only)")
    p.add_argument("--sector-size", type=sector_size, help="sector size (files and stdin; default 512)")
    p.add_argument("--retries", type=int, default=1, help="retries per unreadable sector")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 2, 8),
                   help=argparse.SUPPRESS)
    p.add_argument("--loader", metavar="FILE",
                   help="edl: the phone's Firehose programmer (uploaded through Sahara)")
    p.add_argument("--lun", type=int, action="append", default=[], metavar="N",
                   help="edl: acquire only this LUN (repeatable; default every LUN); IMAGE is "
                        "then a prefix (IMAGE.lunN.imgz + IMAGE.imgset.json) or a directory")
    p.set_defaults(func=run)


def _hash_text(args: argparse.Namespace) -> str:
    """Every --hash given (``--hash md5 --hash sha1`` keeps both), else the default."""
    hashes = args.hash if isinstance(args.hash, list) else [args.hash]
    return ",".join(hashes) if hashes else "sha256"


def _request(args: argparse.Namespace) -> Any:
    from imager.acquisition import AcquireRequest
    from imager.hashing import parse_hash_list

    if args.retries < 0:
        raise UsageError(f"--retries {args.retries}: must be >= 0")
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers {args.workers}: must be 1..64")
    if not -7 <= args.level <= 22:
        raise UsageError(f"--level {args.level}: zstd levels are -7..22")
    case = {k: getattr(args, k) for k in ("case", "evidence", "examiner", "notes",
                                          "description") if getattr(args, k)}
    protection = getattr(args, "protection", None)
    return AcquireRequest(
        source=args.source, image=args.image, image_format=args.format,
        include=tuple(args.partition), exclude=tuple(args.exclude),
        hashes=parse_hash_list(_hash_text(args)), chunk_bytes=args.chunk_size, level=args.level,
        case=case, resume=args.resume, size=args.size, sector_size=args.sector_size,
        retries=args.retries, workers=args.workers, command_line=tuple(sys.argv),
        segment_size=args.segment_size,
        write_protection=protection.to_dict() if protection is not None else {})


def _hint(args: argparse.Namespace) -> str:
    if args.source == "-" or args.format == "simg":   # neither can resume (see _stopped)
        return ""
    argv = sys.argv[1:] if "acquire" in sys.argv[1:] else ["acquire", args.source, args.image]
    if "--resume" not in argv:
        argv = argv + ["--resume"]
    return "imager " + shlex.join(argv)


def _journal_exists(args: argparse.Namespace) -> bool:
    from imager.journal import journal_path

    return args.source != "-" and os.path.exists(journal_path(args.image))


def _stopped(args: argparse.Namespace, what: str) -> str:
    if args.source == "-":
        return f"{what}; a stdin acquisition cannot resume: delete {args.image} and start again"
    if args.format == "simg":
        return f"{what}; {_SIMG_NO_RESUME.format(image=args.image)}"
    return what


_SIMG_NO_RESUME = ("an Android sparse (simg) acquisition cannot resume: delete {image} and "
                   "{image}.journal and start again (--format native or raw can resume)")


def _refuse_simg_resume(args: argparse.Namespace) -> None:
    """An interrupted simg run leaves a journal whose sink state cannot be continued."""
    if args.format == "simg" and _journal_exists(args):
        raise UsageError(f"{args.image}: interrupted; " +
                         _SIMG_NO_RESUME.format(image=args.image))


def _bar(args: argparse.Namespace) -> tuple[Any, Any]:
    if args.quiet:
        return None, None
    from tqdm import tqdm

    # drawn at the first progress report, so a run refused up front (missing source, image
    # exists...) prints its one error line and no empty bar
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
               file=sys.stderr, desc="acquire", delay=float("inf"))

    def progress(done: int, total: int, label: str) -> None:
        if bar.delay:
            bar.delay = 0
        bar.total = total
        bar.update(done - bar.n)
        if label and bar.desc != label:
            bar.set_description(label, refresh=False)

    return bar, progress


def run(args: argparse.Namespace) -> int:
    from imager.writeblock import describe_protection, write_block

    if args.source.startswith("edl:"):
        from imager.cli._phone import run_phone

        return run_phone(args)
    if args.loader or args.lun:
        raise UsageError("--loader and --lun are for edl: sources")
    if args.segment_size is not None and args.format != "e01":
        raise UsageError("--segment-size is for --format e01")
    if args.segment_size is not None:  # before the journal exists: a refused run leaves nothing
        from imager.image.ewf_writer import MIN_SEGMENT_SIZE

        if args.segment_size < MIN_SEGMENT_SIZE:
            raise UsageError(f"--segment-size {args.segment_size}: must be at least "
                             f"{MIN_SEGMENT_SIZE} bytes")
    if args.format == "e01":   # the set is named by its first segment: OUT -> OUT.E01
        from imager.image.ewf_set import segment_base

        args.image = segment_base(args.image) + ".E01"
        if args.chunk_size % (64 * 512):
            raise UsageError(f"--chunk-size {args.chunk_size}: E01 needs whole 32KiB EWF "
                             "chunks (a multiple of 64 sectors; 256KiB for 4096-byte sectors)")
    guard = write_block(args.source) if args.write_block else \
        contextlib.nullcontext(describe_protection(args.source))
    with guard as protection:
        args.protection = protection
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from imager.acquisition import run_acquire
    from imager.report import write_report

    request = _request(args)
    _refuse_simg_resume(args)
    bar, progress = _bar(args)
    try:
        manifest = run_acquire(request, progress=progress)
    except Interrupted as err:
        raise Interrupted(_stopped(args, str(err)), _hint(args)) from err
    except KeyboardInterrupt as err:
        raise Interrupted(_stopped(args, "stopped"), _hint(args)) from err
    except DeviceGone as err:  # everything read so far is committed: a resumable state
        if _journal_exists(args):
            raise Interrupted(f"{err}; everything read so far is saved", _hint(args)) from err
        raise
    except DeviceError:
        if bar is not None:
            bar.close()
        if _journal_exists(args):
            print(f"imager: the image is resumable: {_hint(args)}", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = _summary(args.image, manifest)
    summary["report"] = write_report(manifest, args.image, protection=args.protection)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif not args.quiet:
        for name, value in manifest.hashes.items():
            print(f"{name}  {value}")
        if manifest.unread:
            print(f"unread sectors: {summary['unread_sectors']} (see `imager show`)")
        print(f"report: {summary['report'][0]}")
    if args.source == "-" and manifest.unread:
        first = manifest.unread[0][0] * manifest.sector_size
        print(f"imager: error: the stream ended after {first} of "
              f"{manifest.sector_count * manifest.sector_size} bytes; {args.image} holds what "
              "arrived and records the rest as unread", file=sys.stderr)
        return 1
    return 0


def _summary(image: str, manifest: Any) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for run in manifest.chunk_runs:
        kinds[run.kind.value] = kinds.get(run.kind.value, 0) + run.count
    return {"image": image, "format": manifest.image_format, "hashes": manifest.hashes,
            "size_bytes": manifest.sector_count * manifest.sector_size,
            "sector_size": manifest.sector_size, "chunks": kinds,
            "unread_sectors": sum(c for _, c in manifest.unread),
            "not_acquired_sectors": sum(c for _, c in manifest.not_acquired),
            "seconds": manifest.timings.get("acquire_seconds"),
            "unread": [list(r) for r in manifest.unread]}
