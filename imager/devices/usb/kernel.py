"""What the Linux kernel has made of a USB interface: the block devices usb-storage created
for it, and whether any of them (or their partitions) is mounted.

Detaching usb-storage from a disk with a mounted file system throws away its dirty data, so
``usb-msc:`` refuses to take such a disk over (the user unmounts it, or images /dev/sdX).
"""

from __future__ import annotations

from pathlib import Path

SYS_USB = Path("/sys/bus/usb/devices")
SYS_BLOCK = Path("/sys/class/block")
MOUNTINFO = Path("/proc/self/mountinfo")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def bound_block_devices(bus: int, ports: tuple[int, ...], interface: int,
                        configuration: int = 1) -> list[str]:
    """Names (``sdb``) of the block devices the kernel created under this interface."""
    if not ports:
        return []
    node = SYS_USB / f"{bus}-{'.'.join(map(str, ports))}:{configuration}.{interface}"
    return sorted({p.name for p in node.glob("host*/target*/*/block/*")})


def mount_points(disk: str) -> list[str]:
    """Where ``disk`` or any of its partitions is mounted (mountinfo fields 3 and 5)."""
    base = SYS_BLOCK / disk
    numbers = {_read(base / "dev")}
    if base.is_dir():
        numbers |= {_read(p / "dev") for p in base.iterdir() if (p / "partition").exists()}
    numbers.discard("")
    points = []
    for line in _read(MOUNTINFO).splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in numbers:
            points.append(fields[4].replace("\\040", " "))
    return sorted(points)
