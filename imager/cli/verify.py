"""``imager verify IMAGE [--against SOURCE]``: every chunk check, the whole hashes, the device."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from formats.errors import FormatError
from imager.cli._args import sector_size
from imager.errors import VerificationFailed


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("verify", help="check an image's chunks and hashes (exit 3 on "
                                             "mismatch)")
    p.add_argument("image", help="any image: native, raw (+IMAGE.json), simg, E01, REPO@ID")
    p.add_argument("--against", metavar="SOURCE",
                   help="also re-read SOURCE and name the LBA ranges that differ")
    p.add_argument("--sector-size", type=sector_size, help="sector size of SOURCE (files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _open(path: str) -> Any:
    from imager.image.open import open_image

    try:
        return open_image(path)
    except FormatError as err:  # a damaged manifest or index is a failed verification
        text = str(err)  # some readers already name the file: do not name it twice
        raise VerificationFailed(text if text.startswith(f"{path}:") else f"{path}: {text}") \
            from err


def run(args: argparse.Namespace) -> int:
    from imager.verify import verify_image

    reader = _open(args.image)
    source = None
    bar = None
    try:
        if args.against:
            from imager.devices import open_source

            source = open_source(args.against, sector_size=args.sector_size)
        progress = None
        if not args.quiet and not args.json:
            from tqdm import tqdm

            bar = tqdm(total=reader.sector_count * reader.sector_size, unit="B",
                       unit_scale=True, unit_divisor=1024, file=sys.stderr, desc="verify")

            def progress(done: int, total: int, label: str) -> None:
                bar.update(done - bar.n)

        report = verify_image(reader, against=source, progress=progress)
    finally:
        if bar is not None:
            bar.close()
        reader.close()
        if source is not None:
            source.close()
    _print(args, report)
    return 0 if report.ok else VerificationFailed.exit_code


def _print(args: argparse.Namespace, report: Any) -> None:
    if args.json:
        print(json.dumps({"ok": report.ok, "chunks": report.chunks,
                          "bad_chunks": [list(b) for b in report.bad_chunks],
                          "expected": report.expected, "actual": report.actual,
                          "mismatches": [list(m) for m in report.mismatches],
                          "source_unreadable": [list(m) for m in report.source_unreadable]},
                         indent=2, sort_keys=True))
        return
    for index, lba, count, why in report.bad_chunks:
        what = f"chunk {index}" if index >= 0 else "table sectors"
        print(f"BAD {what} (LBA {lba}-{lba + count - 1}): {why}")
    for name, value in report.expected.items():
        got = report.actual.get(name, "not computed (damaged chunks)")
        print(f"{'OK ' if got == value else 'BAD'} {name} {value}" +
              ("" if got == value else f" (image gives {got})"))
    if not report.expected:
        print("no whole-image hashes recorded (chunk checks only)")
    for lba, count in report.mismatches:
        print(f"DIFFERS from source: LBA {lba}-{lba + count - 1} ({count} sectors)")
    for lba, count in report.source_unreadable:
        print(f"source unreadable: LBA {lba}-{lba + count - 1}")
    print(f"{'verified' if report.ok else 'VERIFICATION FAILED'}: {report.chunks} chunks, "
          f"{len(report.bad_chunks)} bad")
