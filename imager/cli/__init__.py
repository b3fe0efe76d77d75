"""The command line: the only place that parses argv, prints, draws progress bars or exits.

Each verb lives in its own module in this package and exposes ``register(subparsers)``, which
adds its sub-parser and sets ``func`` (a callable taking the parsed namespace and returning an
exit code). Modules are discovered, so adding a verb touches no shared list.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys
from typing import NoReturn

from formats.errors import FormatError
from imager import __version__
from imager.errors import ImagerError, Interrupted


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the full usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


# OSErrors that mean the user named a path that cannot be used (missing directory, read-only
# file system, a directory where a file belongs...): bad input, exit 2. Others (EIO, ENOSPC) are
# runtime failures, exit 1.
PATH_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
})


def one_line(text: str) -> str:
    """``text`` with control characters escaped: partition names, file names and device
    strings in messages come from the device or the user, and a newline or an ESC sequence
    must neither split the one error line nor drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class _OneLineFormatter(logging.Formatter):
    """Log lines with control characters escaped (see one_line); tracebacks (-vv) untouched."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # "imager: warning: ..." like the verbs' own warnings, not "imager: WARNING: ..."
        return one_line(f"imager: {record.levelname.lower()}: {record.message}")


def _path_text(name: object) -> str:
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)


def _describe_os_error(err: OSError) -> str:
    """One line naming the file and the reason, e.g. ``out/x.imgz: No such file or directory``."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    where = _path_text(err.filename)
    if err.filename2 is not None:
        where += f" -> {_path_text(err.filename2)}"
    return f"{where}: {reason}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imager`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter())
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), handlers=[handler])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Interrupted as err:
        print(f"imager: interrupted: {one_line(str(err))}", file=sys.stderr)
        if err.resume_hint:
            print(f"imager: to resume: {one_line(err.resume_hint)}", file=sys.stderr)
        return err.exit_code
    except ImagerError as err:
        print(f"imager: error: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except FormatError as err:
        print(f"imager: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imager: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as err:
        print(f"imager: error: {one_line(_describe_os_error(err))}", file=sys.stderr)
        return 2 if err.errno in PATH_ERRNOS else 1
    except Exception as err:  # the one place a catch-all belongs: report, never a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(f"imager: internal error: {type(err).__name__}: {one_line(str(err))}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
