"""``imager report IMAGE [--format text|json] [--verify]``: the acquisition report of an image."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="print the acquisition report of an image (case file text or JSON)",
        description="Report how IMAGE was acquired: case, examiner, tool, command line, host, "
                    "times, source, partition table, hashes, chunk checks, unread and "
                    "not-acquired ranges by partition, verification, write protection. "
                    "JSON layout: docs/REPORT.md.")
    p.add_argument("image", help="any image (native, raw, simg, E01 set)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="default text")
    p.add_argument("--verify", action="store_true",
                   help="verify every chunk and the hashes now and include the result")
    p.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imager.image.open import open_image
    from imager.report import report_for_reader, to_json
    from imager.report_text import render_text

    with contextlib.closing(open_image(args.image)) as reader:
        verification = None
        if args.verify:
            from imager.verify import verify_image

            verification = verify_image(reader)
        report = report_for_reader(reader, args.image, verification)
    text = to_json(report) if args.format == "json" else render_text(report)
    if args.output:
        from imager.errors import UsageError

        try:
            with open(args.output, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError as err:
            raise UsageError(f"{args.output} already exists; refusing to overwrite it") from err
    else:
        sys.stdout.write(text)
    return 3 if verification is not None and not verification.ok else 0
