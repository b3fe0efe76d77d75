"""``imager devices [--json]``: what can be imaged, and the SOURCE string to use for it.

Block devices come from /sys/class/block (size, model, serial, removable, read-only, whether it
or a partition is mounted or held by dm/md); USB devices in a mode we speak (mass storage,
Qualcomm EDL, fastboot) come from the USB transport's enumeration.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from imager.errors import DeviceError

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/class/block")
MOUNTINFO = Path("/proc/self/mountinfo")
MODE_NAMES = {"usb-msc": "mass storage", "edl": "Qualcomm EDL (9008)", "fastboot": "fastboot"}
# how each mode is used (label, hint): EDL needs the phone's programmer; fastboot only flashes
MODE_HINTS = {
    "edl": ("SOURCE", "  (also a TARGET; needs --loader PROGRAMMER; acquire takes every LUN)"),
    "fastboot": ("TARGET", "  (restore IMAGE TARGET --partition NAME; fastboot cannot read)"),
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("devices", help="list block devices and USB phones/disks",
                              description="List block devices and USB devices in a mode imager "
                                          "speaks, with the SOURCE string to use for each.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all-block", action="store_true",
                   help="also list empty loop devices, ram and zram disks")
    p.set_defaults(func=run)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _mounts(mountinfo: Path) -> dict[str, list[str]]:
    """major:minor -> mount points (mountinfo field 3 is the device, field 5 the point)."""
    mounts: dict[str, list[str]] = {}
    for line in _read(mountinfo).splitlines():
        fields = line.split()
        if len(fields) > 4:
            mounts.setdefault(fields[2], []).append(fields[4].replace("\\040", " "))
    return mounts


def _serial(dev: Path) -> str:
    for name in ("device/serial", "serial", "device/wwid", "wwid"):
        text = _read(dev / name)
        if text:
            return text
    return ""


def _disk_entry(dev: Path, mounts: dict[str, list[str]]) -> dict[str, Any]:
    parts = sorted(p for p in dev.iterdir() if (p / "partition").exists())
    mounted, held = [], []
    for node in [dev, *parts]:
        mounted += mounts.get(_read(node / "dev"), [])
        holders = node / "holders"
        held += sorted(h.name for h in holders.iterdir()) if holders.is_dir() else []
    model = " ".join(t for t in (_read(dev / "device/vendor"), _read(dev / "device/model"))
                     if t)
    return {"source": f"/dev/{dev.name}", "name": dev.name,
            "size_bytes": int(_read(dev / "size") or 0) * 512,   # sysfs counts 512-byte units
            "sector_size": int(_read(dev / "queue/logical_block_size") or 512),
            "model": model, "serial": _serial(dev),
            "removable": _read(dev / "removable") == "1", "read_only": _read(dev / "ro") == "1",
            "partitions": [p.name for p in parts], "mounted": sorted(set(mounted)),
            "held_by": held, "backing_file": _read(dev / "loop/backing_file")}


def block_devices(sys_block: Path = SYS_BLOCK, mountinfo: Path = MOUNTINFO,
                  include_all: bool = False) -> list[dict[str, Any]]:
    """Whole disks (not partitions) with what a user needs to pick one safely."""
    if not sys_block.is_dir():
        return []
    mounts = _mounts(mountinfo)
    disks = []
    for dev in sorted(sys_block.iterdir()):
        if (dev / "partition").exists():
            continue
        entry = _disk_entry(dev, mounts)
        boring = dev.name.startswith(("ram", "zram")) or entry["size_bytes"] == 0
        if include_all or not boring:
            disks.append(entry)
    return disks


def usb_devices() -> tuple[list[dict[str, Any]], str]:
    """(devices, note): the note says why USB could not be listed, if it could not."""
    try:
        from imager.devices.usb.transport import list_devices

        return [d.to_dict() for d in list_devices()], ""
    except (DeviceError, ImportError) as err:
        return [], f"USB not available: {err}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _print_block(disks: list[dict[str, Any]]) -> None:
    print("Block devices:")
    for d in disks:
        flags = [f for f, on in (("removable", d["removable"]), ("read-only", d["read_only"]))
                 if on]
        if d["mounted"]:
            flags.append("MOUNTED at " + ", ".join(d["mounted"]))
        if d["held_by"]:
            flags.append("held by " + ", ".join(d["held_by"]))
        if d["backing_file"]:
            flags.append(f"loop of {d['backing_file']}")
        what = " ".join(t for t in (d["model"], f"serial {d['serial']}" if d["serial"] else "")
                        if t)
        print(f"  {d['source']:<16} {_size(d['size_bytes']):>10}  {d['sector_size']}-byte "
              f"sectors  {what}  {'  '.join(flags)}".rstrip())
    if not disks:
        print("  (none)")


def _print_usb(devices: list[dict[str, Any]], note: str) -> None:
    print("USB devices:")
    for d in devices:
        name = " ".join(t for t in (d["manufacturer"], d["product"]) if t)
        modes = ", ".join(MODE_NAMES.get(m, m) for m in d["modes"])
        serial = f"serial {d['serial']}" if d["serial"] else "no serial"
        print(f"  {d['vid']}:{d['pid']} port {d['port']:<8} {name}  {serial}  [{modes}]")
        for source in d["sources"]:
            label, hint = MODE_HINTS.get(source.partition(":")[0], ("SOURCE", ""))
            print(f"      {label}: {source}{hint}")
        if d["note"]:
            print(f"      note: {d['note']}")
    if note:
        print(f"  ({note})")
    elif not devices:
        print("  (none in mass-storage, EDL or fastboot mode)")


def run(args: argparse.Namespace) -> int:
    disks = block_devices(include_all=args.all_block)
    usb, note = usb_devices()
    if args.json:
        print(json.dumps({"block": disks, "usb": usb, "usb_note": note}, indent=2))
        return 0
    _print_block(disks)
    print()
    _print_usb(usb, note)
    return 0
