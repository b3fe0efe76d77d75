"""The phone paths of ``acquire`` and ``restore`` (not a verb: the name starts with ``_``).

``imager acquire edl: OUT --loader L`` captures every LUN (imager.phoneset) and prints one line
per LUN, then everything that could not be captured; ``imager restore SET edl: --loader L``
restores each LUN image of a set through Firehose ``program``; ``imager restore IMAGE fastboot:
--partition NAME`` flashes partitions (imager.devices.usb.fastboot).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imager.errors import Interrupted, UsageError


def run_phone(args: argparse.Namespace) -> int:
    """``imager acquire edl:...``: every (selected) LUN, one set manifest."""
    from imager.cli.acquire import _bar, _request
    from imager.phoneset import acquire_phone

    if not args.loader:
        raise UsageError("edl: needs the phone's Firehose programmer: --loader FILE")
    if args.format not in ("native", "raw"):
        raise UsageError(f"--format {args.format}: a phone set is made of native or raw images")
    if args.size or args.write_block:
        raise UsageError("--size and --write-block do not apply to edl: sources")
    from imager.writeblock import describe_protection

    args.protection = describe_protection(args.source)   # recorded in every LUN's manifest
    request = _request(args)
    bar, progress = _bar(args)
    try:
        phone = acquire_phone(args.source[len("edl:"):], args.image, request, loader=args.loader,
                              luns=tuple(args.lun), progress=progress)
    except KeyboardInterrupt as err:
        raise Interrupted("stopped", "re-run the same command to resume") from err
    finally:
        if bar is not None:
            bar.close()
    return _report_set(args, phone)


def _report_set(args: argparse.Namespace, phone: Any) -> int:
    problems = phone.not_captured()
    if args.json:
        print(json.dumps({"set": phone.path, **phone.to_dict()}, indent=2, sort_keys=True))
    elif not args.quiet:
        for e in phone.luns:
            size = f"{e.sector_count} x {e.sector_size} B" if e.sector_size else "?"
            what = e.hashes.get("sha256", "") or e.reason
            print(f"LUN {e.lun}: {e.status:8} {size:>20}  table {e.table or '-':4}  "
                  f"{e.image or '-'}  {what}")
        print(f"set: {phone.path}")
    for line in problems:
        print(f"imager: {line}", file=sys.stderr)
    if any(e.status == "failed" for e in phone.luns):
        print("imager: the phone was NOT captured completely (see NOT CAPTURED above); re-run "
              "the same command to retry the failed LUNs", file=sys.stderr)
        return 1
    return 0


def restore_set(args: argparse.Namespace, with_target: Any) -> int:
    """``imager restore SET edl:...``: each LUN image onto its LUN (``with_target`` does one).

    ``--lun`` picks LUNs; ``--partition`` restores those partitions in the LUNs that have them.
    """
    from imager.devices.usb.edl import open_session
    from imager.phoneset import load_set

    if not args.target.startswith("edl:"):
        raise UsageError(f"{args.image} is a phone set: restore it onto edl: (got {args.target})")
    phone = load_set(args.image)
    entries = [e for e in phone.luns if e.image and e.status != "failed"
               and (not args.lun or e.lun in args.lun)]
    if not entries:
        raise UsageError(f"{args.image}: no captured LUN to restore (selected {args.lun or 'all'})")
    session, _ = open_session(args.target[len("edl:"):], {"loader": args.loader})
    try:
        done = [_restore_lun(args, phone, e, session, with_target) for e in entries]
    finally:
        session.close()
    if args.partition and not any(code is not None for code in done):
        raise UsageError(f"--partition {', '.join(args.partition)}: in no LUN image of the set")
    return next((code for code in done if code), 0)


def _restore_lun(args: argparse.Namespace, phone: Any, entry: Any, session: Any,
                 with_target: Any) -> int | None:
    """Restore one LUN image; None when --partition names nothing in it."""
    from imager.devices.usb.edl import EdlTarget
    from imager.image.open import open_image

    reader = open_image(phone.image_path(entry))
    try:
        one = argparse.Namespace(**vars(args))
        if args.journal:                       # one journal per LUN
            one.journal = f"{args.journal}.lun{entry.lun}"
        if args.partition:
            names = _partition_names(reader)
            one.partition = [p for p in args.partition if p in names]
            if not one.partition:
                return None
        target = EdlTarget(session, entry.lun, reader.sector_size)
        return int(with_target(one, reader, target, False) or 0)
    finally:
        reader.close()


def _partition_names(reader: Any) -> set[str]:
    from formats.errors import FormatError
    from imager.image.source import ImageAsSource
    from imager.table import read_table

    try:
        return {p.name for p in read_table(ImageAsSource(reader)).partitions}
    except FormatError:
        return set()


def flash_fastboot(args: argparse.Namespace) -> int:
    """``imager restore IMAGE fastboot: --partition NAME``: flash each named partition."""
    from imager.devices.usb.fastboot import flash_partition, open_target
    from imager.image.open import open_image

    if not args.partition:
        raise UsageError("fastboot: flashes partitions: give --partition NAME (repeatable)")
    if args.dry_run:
        raise UsageError("fastboot: --dry-run is not supported (nothing can be read back)")
    reader = open_image(args.image)
    try:
        device = open_target(args.target[len("fastboot:"):])
        try:
            if not args.yes:
                _confirm_flash(args)
            results = [flash_partition(device, reader, name,
                                       erase_first=args.erase_first).to_dict()
                       for name in args.partition]
        finally:
            device.close()
    finally:
        reader.close()
    if args.json:
        print(json.dumps({"image": args.image, "target": args.target, "flashed": results,
                          "verified": False}, indent=2))
    elif not args.quiet:
        for r in results:
            print(f"flashed {r['partition']}: {r['bytes']} bytes in {len(r['pieces'])} "
                  f"download(s) (fastboot cannot read back: NOT verified)")
    return 0


def _confirm_flash(args: argparse.Namespace) -> None:
    """Flashing overwrites partitions: ask; no answer (no stdin) is a refusal."""
    from imager.cli._args import confirm

    confirm(args.target, f"Flash {', '.join(args.partition)} from {args.image} onto "
                         f"{args.target}?")


def lun_from_image(reader: Any) -> int | None:
    """The LUN a single LUN image was acquired from (its source identity), if any."""
    from imager.restore_plan import image_source_identity

    ident = image_source_identity(reader)
    extra = getattr(ident, "extra", None) or {}
    lun = extra.get("lun") if isinstance(extra, dict) else None
    return lun if isinstance(lun, int) else None


def check_usb_options(args: argparse.Namespace) -> None:
    if (args.loader or args.lun) and not args.target.startswith("edl:"):
        raise UsageError("--loader and --lun are for edl: targets")
    if getattr(args, "erase_first", False) and not args.target.startswith("fastboot:"):
        raise UsageError("--erase-first is for fastboot: targets")

