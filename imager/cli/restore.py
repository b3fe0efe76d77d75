"""``imager restore IMAGE TARGET``: write a verified image back onto a device or file."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

from imager.devices.base import Identity
from imager.errors import BadInput, Interrupted, TargetRefused, UsageError
from imager.restore_plan import ZEROS_MODES, RestorePlan, TargetShape, image_source_identity

EPILOG = """exit codes: 0 ok, 1 runtime failure, 2 usage/bad input/refused target,
3 verification mismatch (corrupt image chunk or read-back), 130 interrupted (re-run to resume)"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("restore", help="write an image back onto a device or file",
                              description="Restore IMAGE (native, raw, ...) onto TARGET, "
                              "verifying each chunk before writing and reading it back after.",
                              epilog=EPILOG)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("target", metavar="TARGET", help="block device or image file (created "
                   "with the image's size when missing)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--zeros", choices=ZEROS_MODES, default="write",
                   help="ZERO chunks: write them (default), discard/zero-out, or skip them")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not read written ranges back")
    p.add_argument("--partition", action="append", default=[], metavar="NAME",
                   help="restore just this partition into the target's partition of the "
                   "same name (repeatable)")
    p.add_argument("--include-identity", action="store_true",
                   help="also write phone identity partitions (persist, modemst*, efs, ...) "
                   "onto a device other than the image's source")
    p.add_argument("--grow-last", action="store_true",
                   help="on a bigger target, extend the last GPT partition to fill it")
    p.add_argument("--only-changed", action="store_true",
                   help="read the target first; write only chunks that differ")
    p.add_argument("--write-unread", action="store_true",
                   help="also write UNREAD/NOT_ACQUIRED ranges (as zeros)")
    p.add_argument("--journal", metavar="PATH", help="resume journal (default: beside a "
                   "file target, in the state dir for a device)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--loader", metavar="FILE",
                   help="edl: the phone's Firehose programmer (uploaded through Sahara)")
    p.add_argument("--lun", type=int, action="append", default=[], metavar="N",
                   help="edl: restore onto this LUN (default: the LUN the image came from; "
                   "for a phone set: only these LUNs)")
    p.add_argument("--erase-first", action="store_true",
                   help="fastboot: erase each partition (fastboot erase) before flashing it, "
                   "so what the image does not cover reads as erased instead of old data")
    p.set_defaults(func=run)


USB_TARGETS = ("edl:", "fastboot:", "usb-msc:")


def run(args: argparse.Namespace) -> int:
    from imager.cli._phone import check_usb_options, flash_fastboot, restore_set
    from imager.image.open import open_image
    from imager.phoneset import is_phone_set

    check_usb_options(args)
    if args.target.startswith("fastboot:"):
        return flash_fastboot(args)
    if is_phone_set(args.image):
        return restore_set(args, _with_target)
    reader = open_image(args.image)
    try:
        return _with_reader(args, reader)
    finally:
        reader.close()


def _with_reader(args: argparse.Namespace, reader: Any) -> int:
    from imager.devices import open_target

    exists = os.path.exists(args.target) or args.target.startswith(USB_TARGETS)
    if not exists and os.path.realpath(args.target).startswith("/dev/"):
        raise TargetRefused(f"{args.target}: no such device (a missing file is only created "
                            "outside /dev)")
    if os.path.isdir(args.target):
        raise BadInput(f"{args.target}: is a directory, not a device or image file")
    if args.partition and not exists:  # refuse before creating a file that has no table
        raise BadInput(f"{args.target}: does not exist; --partition writes into the target's "
                       "own partitions, so it needs a target with a partition table")
    if args.dry_run and not exists:
        return _dry_run(args, reader, _new_file_shape(args.target, reader), None)
    size = reader.sector_count * reader.sector_size
    target = open_target(args.target, sector_size=_file_sector_size(args.target, reader),
                         create_size=None if exists else size, **_usb_options(args, reader))
    try:
        return _with_target(args, reader, target, created=not exists)
    finally:
        target.close()


def _with_target(args: argparse.Namespace, reader: Any, target: Any, created: bool) -> int:
    from imager.preflight import check_not_the_image, check_target, describe_target
    from imager.restore_plan import build_plan

    check_not_the_image(args.image, target)
    check_target(reader, target, whole_device=not args.partition)
    plan = build_plan(reader, target, partitions=tuple(args.partition),
                      include_identity=args.include_identity, grow_last=args.grow_last,
                      write_unread=args.write_unread, source_identity=image_source_identity(reader))
    about = None if created else describe_target(target)
    if args.dry_run:
        return _dry_run(args, reader, target, about, plan)
    if not created and not args.yes:
        _confirm(args, about, plan)
    return _restore(args, reader, target, plan)


def _restore(args: argparse.Namespace, reader: Any, target: Any, plan: RestorePlan) -> int:
    from imager.restore import restore
    from imager.restore_journal import default_journal_path

    journal = args.journal or default_journal_path(target.identity)
    total = sum(s.count for s in plan.steps) * plan.sector_size
    bar = None if args.quiet or args.json else _bar(total)
    try:
        result = restore(reader, target, plan, zeros=args.zeros, verify=args.verify,
                         only_changed=args.only_changed,
                         progress=bar.update if bar else None, journal_path=journal)
    except Interrupted as err:
        err.resume_hint = _command_line(args)
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = {"image": args.image, "target": args.target, **result.to_dict(),
               "notes": list(plan.notes), "skipped_identity": list(plan.skipped_identity)}
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        _print_result(summary)
    return 0


def _usb_options(args: argparse.Namespace, reader: Any) -> dict[str, Any]:
    """edl: the programmer and the LUN (asked, in the spec, or the image's own)."""
    if not args.target.startswith("edl:"):
        return {}
    from imager.cli._phone import lun_from_image

    opts: dict[str, Any] = {"loader": args.loader}
    if len(args.lun) > 1:
        raise UsageError("one image restores onto one LUN: give --lun once")
    lun = args.lun[0] if args.lun else None
    if lun is None and "lun=" not in args.target:
        lun = lun_from_image(reader)
    if lun is not None:
        opts["lun"] = lun
    return opts


def _command_line(args: argparse.Namespace) -> str:
    """The command that continues this restore (same plan options, so the journal matches)."""
    cmd = ["imager", "restore", args.image, args.target, "--yes", "--zeros", args.zeros]
    for name in args.partition:
        cmd += ["--partition", name]
    for flag in ("include_identity", "grow_last", "write_unread", "only_changed"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    if not args.verify:
        cmd.append("--no-verify")
    if args.journal:
        cmd += ["--journal", args.journal]
    if args.loader:
        cmd += ["--loader", args.loader]
    for lun in args.lun:
        cmd += ["--lun", str(lun)]
    return shlex.join(cmd)


def _bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc="restore", file=sys.stderr, dynamic_ncols=True)


def _print_result(s: dict[str, Any]) -> None:
    mib = 1 << 20
    print(f"restored {s['image']} -> {s['target']}: {s['bytes_written'] / mib:.1f} MiB "
          f"written, {s['bytes_zeroed'] / mib:.1f} MiB zeroed, {s['bytes_skipped'] / mib:.1f} "
          f"MiB skipped, {s['bytes_unchanged'] / mib:.1f} MiB unchanged, "
          f"{'verified' if s['verified'] else 'NOT verified'} in {s['seconds']:.1f} s")
    for note in s["notes"]:
        print(f"  note: {note}")


def _confirm(args: argparse.Namespace, about: dict[str, Any] | None, plan: RestorePlan) -> None:
    """Show what will be overwritten and ask; no answer (no stdin) is a refusal."""
    from imager.cli._args import confirm

    sys.stderr.write(_describe(about) + "\n" + _plan_text(_summary(plan, args.zeros)))
    confirm(args.target, f"Overwrite {args.target}?")


def _describe(about: dict[str, Any] | None) -> str:
    if about is None:
        return ""
    lines = [(f"TARGET {about['path']} ({about['kind']}): model {about['model'] or '?'}, "
             f"serial {about['serial'] or '?'}, {about['size_bytes']} bytes, "
             f"{about['sector_size']}-byte sectors")]
    table = about.get("table")
    if table:
        lines.append(f"  current table: {table.get('kind')}, "
                     f"{len(table.get('partitions', []))} partitions")
        for p in table.get("partitions", []):
            lines.append(f"    {p.get('index')!s:>3} {p.get('name')!r:24} "
                         f"LBA {p.get('first_lba')}..{p.get('last_lba')}")
    else:
        lines.append(f"  current table: none readable ({about.get('table_error', 'none')})")
    return "\n".join(lines)


def _summary(plan: RestorePlan, zeros: str) -> dict[str, Any]:
    from imager.restore_plan import summarize

    return summarize(plan, zeros)


def _plan_text(s: dict[str, Any]) -> str:
    lines = [(f"PLAN: {s['bytes_to_write']} bytes to write, {s['bytes_to_zero']} to zero fast, "
             f"{s['bytes_skipped']} skipped, {len(s['ranges'])} ranges")]
    for r in s["ranges"][:50]:
        lines.append(f"  {r['action']:5} target LBA {r['target_lba']}+{r['count']} "
                     f"(image LBA {r['image_lba']}, {r['kind']})")
    if len(s["ranges"]) > 50:
        lines.append(f"  ... {len(s['ranges']) - 50} more ranges")
    lines += [f"  note: {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


def _dry_run(args: argparse.Namespace, reader: Any, target: Any, about: dict[str, Any] | None,
             plan: RestorePlan | None = None) -> int:
    if plan is None:
        from imager.restore_plan import build_plan

        plan = build_plan(reader, target, partitions=tuple(args.partition),
                          include_identity=args.include_identity, grow_last=args.grow_last,
                          write_unread=args.write_unread,
                          source_identity=image_source_identity(reader))
    summary = _summary(plan, args.zeros)
    if args.json:
        print(json.dumps({"dry_run": True, "target_info": about, **summary}, indent=2))
    else:
        print(_describe(about))
        print(_plan_text(summary), end="")
        print("dry run: nothing written")
    return 0


def _new_file_shape(path: str, reader: Any) -> TargetShape:
    size = reader.sector_count * reader.sector_size
    return TargetShape(reader.sector_size, reader.sector_count,
                       Identity(kind="file", path=path, size_bytes=size,
                                sector_size=reader.sector_size))


def _file_sector_size(path: str, reader: Any) -> int | None:
    """Files take the image's sector size; devices report their own."""
    import stat

    try:
        return None if stat.S_ISBLK(os.stat(path).st_mode) else reader.sector_size
    except FileNotFoundError:
        return reader.sector_size
