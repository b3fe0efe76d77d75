"""The peer tools the suite measures imager against, their versions and the machine.

Every command is a list of argv lists: one timed run executes them in order (a write ends with
``sync OUT`` so no tool wins by leaving dirty pages behind). Peers run with the flags the
performance issue names: ``dd bs=4M``, ``zstd -3 -T2``, ``dc3dd hash=sha256``, ``ewfacquire -c
deflate:fast`` (unattended: ``-u``), ``img2simg``, ``simg2img``, ``bmaptool copy`` (with a bmap
made by ``bmaptool create``) and ``sha256sum``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

Cmds = list[list[str]]
TOOLS = ("dd", "zstd", "dc3dd", "ewfacquire", "img2simg", "simg2img", "bmaptool", "sha256sum",
         "sync", "sgdisk")


def missing_tools() -> list[str]:
    """Peer tools that are not installed (the suite refuses to run without them)."""
    return [t for t in TOOLS if shutil.which(t) is None]


def sync(path: Path | str) -> list[str]:
    return ["sync", str(path)]


def dd(raw: Path, out: Path) -> Cmds:
    return [["dd", f"if={raw}", f"of={out}", "bs=4M", "status=none"], sync(out)]


def zstd3(raw: Path, out: Path) -> Cmds:
    return [["zstd", "-3", "-T2", "-q", "-f", str(raw), "-o", str(out)], sync(out)]


def dc3dd(raw: Path, out: Path) -> Cmds:
    return [["dc3dd", f"if={raw}", f"of={out}", "hash=sha256", "nwspc=on",
             f"log={out}.log"], sync(out)]


def ewfacquire(raw: Path, out: Path) -> Cmds:
    """``out`` is the target basename: ewfacquire writes out.E01, out.E02, ..."""
    return [["ewfacquire", "-u", "-q", "-c", "deflate:fast", "-t", str(out), str(raw)],
            ["sync", str(out.parent)]]


def img2simg(raw: Path, out: Path) -> Cmds:
    return [["img2simg", str(raw), str(out)], sync(out)]


def simg2img(simg: Path, out: Path) -> Cmds:
    return [["simg2img", str(simg), str(out)], sync(out)]


def bmaptool_copy(raw: Path, bmap: Path, out: Path) -> Cmds:
    return [["bmaptool", "-q", "copy", "--bmap", str(bmap), str(raw), str(out)], sync(out)]


def sha256sum(raw: Path) -> Cmds:
    return [["sha256sum", str(raw)]]


def bmaptool_create(raw: Path, bmap: Path) -> None:
    """Write the bmap ``bmaptool copy`` needs (not timed)."""
    with open(bmap, "w") as f:
        subprocess.run(["bmaptool", "create", str(raw)], stdout=f, check=True)


def _first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"? ({err})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def tool_versions() -> dict[str, str]:
    """Version line of every peer tool."""
    return {"dd": _first_line(["dd", "--version"]), "zstd": _first_line(["zstd", "--version"]),
            "dc3dd": _first_line(["dc3dd", "--version"]),
            "ewfacquire": _first_line(["ewfacquire", "-V"]),
            "img2simg/simg2img": _apt_version("android-sdk-libsparse-utils"),
            "bmaptool": _first_line(["bmaptool", "--version"]),
            "sha256sum": _first_line(["sha256sum", "--version"])}


def _apt_version(package: str) -> str:
    out = _first_line(["dpkg-query", "-W", "-f", "${Version}", package])
    return f"{package} {out}"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "?"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    sha = " (SHA-NI)" if flags and "sha_ni" in flags.group(1).split() else ""
    return (match.group(1).strip() if match else "?") + sha


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "?"


def machine() -> dict[str, str]:
    """What the numbers were measured on (for docs/BENCHMARKS.md)."""
    import blake3
    import construct
    import zstandard

    return {"cpus": str(os.cpu_count()), "cpu": _cpu_model(), "ram": _ram(),
            "kernel": platform.release(), "os": _os_name(),
            "python": sys.version.split()[0],
            "zstandard": f"{zstandard.__version__} ({zstandard.backend}, libzstd "
                         f"{'.'.join(map(str, zstandard.ZSTD_VERSION))})",
            "construct": construct.__version__, "blake3": blake3.__version__,
            "openssl": _openssl(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def _openssl() -> str:
    import ssl

    return ssl.OPENSSL_VERSION


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()
