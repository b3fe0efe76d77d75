"""``imager export IMAGE --to FORMAT OUT``: convert an image (raw, simg, e01: imager.export)."""

from __future__ import annotations

import argparse
import contextlib
import inspect
from typing import Any

from imager.errors import UsageError


def register(subparsers: Any) -> None:
    from imager.export import EXPORTERS

    p = subparsers.add_parser("export", help="write an image in another format")
    p.add_argument("image", help="any image (native, raw, simg, E01, REPO@ID)")
    p.add_argument("--to", required=True, choices=sorted(EXPORTERS), help="output format")
    p.add_argument("out", help="output path (must not exist)")
    p.add_argument("--partition", metavar="NAME", help="only this partition (formats that "
                                                       "support it, e.g. simg)")
    p.add_argument("--max-size", type=_size, metavar="BYTES",
                   help="simg: split into flashable pieces of at most BYTES (fastboot "
                        "max-download-size), written as OUT.0.simg, OUT.1.simg, ...")
    p.add_argument("--crc", action="store_true", default=None,
                   help="simg: append a CRC32 chunk to each file")
    p.add_argument("-O", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="format option, e.g. -O max_size=268435456 -O crc=1 (simg), "
                        "-O segment_size=... (e01)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"-O {item!r}: expected KEY=VALUE")
        opts[key] = int(value) if value.lstrip("-").isdigit() else value
    if args.partition is not None:
        opts["partition"] = args.partition
    for key in ("max_size", "crc"):   # the simg flags of issue 5, same as -O max_size=/crc=
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    return opts


def _size(text: str) -> int:
    from imager.cli.acquire import parse_size

    return parse_size(text)


def _refuse_ignored(to: str, func: Any, opts: dict[str, Any]) -> None:
    """Refuse options an exporter would swallow unread through ``**kwargs``: ``--to e01
    --partition boot`` must not quietly write the whole image."""
    params = inspect.signature(func).parameters
    named = {name for name, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    ignored = sorted(set(opts) - named)
    if "partition" in ignored:
        raise UsageError(f"--to {to} exports the whole image; --partition is for simg "
                         "(use `imager extract` for one partition)")
    if ignored:
        raise UsageError(f"--to {to} does not take {', '.join(ignored)}")


def run(args: argparse.Namespace) -> int:
    from imager.export import exporter
    from imager.image.open import open_image

    func = exporter(args.to)
    opts = _options(args)
    try:
        inspect.signature(func).bind(None, args.out, **opts)
    except TypeError as err:  # an option this format does not take
        raise UsageError(f"--to {args.to}: {err}") from err
    _refuse_ignored(args.to, func, opts)
    with contextlib.closing(open_image(args.image)) as reader:
        written = func(reader, args.out, **opts)
    if isinstance(written, list) and written != [args.out]:
        for path in written:   # split simg pieces, flashed one after the other
            print(path)
    return 0
