"""``imager extract IMAGE --partition NAME -o FILE``: one partition's bytes, by random access.

The partition name comes from the device and is only ever matched, never used as a path:
the bytes go to the file named by ``-o`` and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from imager.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("extract", help="write one partition of an image to a file")
    p.add_argument("image", help="any image (native, raw, simg, E01, REPO@ID)")
    p.add_argument("--partition", required=True, metavar="NAME", help="partition name (or glob "
                                                                       "matching exactly one)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file (must not exist; '-' for stdout)")
    p.set_defaults(func=run)


def _open_out(path: str) -> int:
    if path == "-":
        return sys.stdout.buffer.fileno()
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError as err:
        raise UsageError(f"{path} already exists; refusing to overwrite it") from err


def run(args: argparse.Namespace) -> int:
    from imager.image.open import open_image
    from imager.partitions import find_one, image_partitions

    with contextlib.closing(open_image(args.image)) as reader:
        part = find_one(image_partitions(reader), args.partition)
        if part.last_lba >= reader.sector_count:
            raise UsageError(f"partition {part.name!r} ends at LBA {part.last_lba}, past the "
                             f"image's {reader.sector_count} sectors")
        _warn_unread(reader, part)
        fd = _open_out(args.output)
        try:
            step = max(reader.chunk_sectors, 1)
            for lba in range(part.first_lba, part.last_lba + 1, step):
                data = reader.read(lba, min(step, part.last_lba + 1 - lba))
                view = memoryview(data)
                while len(view):
                    view = view[os.write(fd, view):]
        finally:
            if args.output != "-":
                os.close(fd)
    return 0


def _warn_unread(reader: Any, part: Any) -> None:
    """Refuse a partition that was never acquired; warn about holes in one that was."""
    extents = reader.extents() if hasattr(reader, "extents") else []
    holes = [e for e in extents if not e.kind.was_read
             and e.start_lba <= part.last_lba and e.end_lba > part.first_lba]
    missing = sum(min(e.end_lba, part.last_lba + 1) - max(e.start_lba, part.first_lba)
                  for e in holes)
    if missing == part.count_sectors and all(e.kind.value == "not_acquired" for e in holes):
        raise UsageError(f"partition {part.name!r} was not acquired in this image "
                         "(excluded at acquisition): there is nothing to extract")
    for e in holes[:10]:
        print(f"imager: warning: LBA {e.start_lba}+{e.count} of {part.name!r} is "
              f"{e.kind.value} (written as zeros)", file=sys.stderr)
    if len(holes) > 10:
        print(f"imager: warning: ... {len(holes) - 10} more such ranges; {missing} of "
              f"{part.count_sectors} sectors written as zeros", file=sys.stderr)
