"""The command line: the only place that parses argv, prints, draws progress bars or exits.

Each verb lives in its own module in this package and exposes ``register(subparsers)``, which
adds its sub-parser and sets ``func`` (a callable taking the parsed namespace and returning an
exit code). Modules are discovered, so adding a verb touches no shared list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from formats.errors import FormatError
from imager import __version__
from imager.errors import ImagerError, Interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imager", description="Sector-level disk imaging for phones.")
    parser.add_argument("--version", action="version", version=f"imager {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imager`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="imager: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Interrupted as err:
        print(f"imager: interrupted: {err}", file=sys.stderr)
        if err.resume_hint:
            print(f"imager: to resume: {err.resume_hint}", file=sys.stderr)
        return err.exit_code
    except ImagerError as err:
        print(f"imager: error: {err}", file=sys.stderr)
        return err.exit_code
    except FormatError as err:
        print(f"imager: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imager: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as err:  # the one place a catch-all belongs: report, never a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(f"imager: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
