"""Argument types and prompts shared by several verbs."""

from __future__ import annotations

import argparse
import sys

from imager.errors import TargetRefused

MIN_SECTOR = 512
MAX_SECTOR = 64 * 1024   # no storage in use has bigger logical sectors


def sector_size(text: str) -> int:
    """``--sector-size``: a power of two from 512 to 64 KiB (e.g. 512, 4096)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not MIN_SECTOR <= value <= MAX_SECTOR or value & (value - 1):
        raise argparse.ArgumentTypeError(
            f"{value} is not a sector size (a power of two from {MIN_SECTOR} to {MAX_SECTOR})")
    return value


def confirm(target: str, question: str) -> None:
    """Ask ``question`` on stderr; anything but yes (no stdin included) refuses ``target``."""
    sys.stderr.write(f"{question} Type 'yes' to continue: ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise TargetRefused(f"{target}: not confirmed (answer 'yes' or pass --yes)")
