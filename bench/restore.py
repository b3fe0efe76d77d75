"""Time ``imager restore`` against ``bmaptool copy``, ``simg2img`` and ``dd bs=4M``.

Every tool writes the same sample phone image (fixtures/phone.py) onto the same kind of target
(a file, or a loop device with ``--loop``) and the target is fsynced inside the timing (``sync
FILE``) so no tool wins by leaving dirty pages behind. Each result is checked (sha256 of the
target equals the image) before its time counts. Preparation (bmap, simg, native image) is not
timed. Prints the median of each tool and its ratio to ``dd``.

Usage: ``python -m bench.restore [--size 256M] [--runs 3] [--loop]``. Sizes of 1 GiB and more
run once (``--runs`` is ignored there), as the brief asks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.phone import build_phone, parse_size
from imager.hashing import file_sha256 as sha256

BIG = 1 << 30


def prepare(work: Path, size: int) -> dict[str, Path]:
    """The image in every input format the tools take."""
    raw = work / "phone.img"
    build_phone(raw, size, seed=1)
    files = {"raw": raw, "bmap": work / "phone.bmap", "simg": work / "phone.simg"}
    with open(files["bmap"], "w") as f:
        subprocess.run(["bmaptool", "create", str(raw)], stdout=f, check=True)
    subprocess.run(["img2simg", str(raw), str(files["simg"])], check=True)
    native = work / "phone.native"
    proc = subprocess.run([sys.executable, "-m", "imager", "acquire", str(raw), str(native),
                           "--quiet"], check=False, capture_output=True,
                          text=True)
    if proc.returncode == 0:
        files["native"] = native
    else:
        print(f"(no native image: imager acquire said {proc.stderr.strip()[:200]!r})")
    return files


def commands(files: dict[str, Path], target: str, blank: bool) -> dict[str, list[list[str]]]:
    """Tool name -> the commands one timed run executes."""
    # --include-identity: the bench copies the whole image; on a device imager would otherwise
    # keep the target's own identity partitions (the image came from another "phone")
    imager = [sys.executable, "-m", "imager", "restore", "--include-identity"]
    sync = ["sync", target]
    cmds = {
        "dd bs=4M": [["dd", f"if={files['raw']}", f"of={target}", "bs=4M", "conv=notrunc",
                      "status=none"], sync],
        "bmaptool copy": [["bmaptool", "-q", "copy", "--bmap", str(files["bmap"]),
                           str(files["raw"]), target], sync],
        "simg2img": [["simg2img", str(files["simg"]), target], sync],
        "imager restore raw": [imager + [str(files["raw"]), target, "--yes", "-q"], sync],
        "imager restore raw --no-verify": [imager + [str(files["raw"]), target, "--yes", "-q",
                                                     "--no-verify"], sync],
    }
    if "native" in files:
        cmds["imager restore native"] = [imager + [str(files["native"]), target, "--yes",
                                                   "-q"], sync]
    if "native" in files and blank:  # skipping zeros is only right on a blank target
        cmds["imager restore native --zeros skip"] = [imager + [
            str(files["native"]), target, "--yes", "-q", "--zeros", "skip"], sync]
    return cmds


def wipe(target: str, size: int, is_file: bool) -> None:
    """Give every run the same starting point.

    A file starts full of 0xEE, so every tool must write every byte. A device starts blank
    (zeros): bmaptool and simg2img leave a device's unmapped/DONT_CARE ranges untouched, which
    is only correct on a blank device, so that is the fair comparison there (with imager's
    ``--zeros skip``, made for known-blank targets).
    """
    block = (b"\xee" if is_file else b"\0") * (4 << 20)
    with open(target, "r+b" if os.path.exists(target) else "wb") as f:
        f.writelines(block[:min(len(block), size - off)] for off in range(0, size, len(block)))
        f.flush()
        os.fsync(f.fileno())


def time_tool(name: str, cmds: list[list[str]], target: str, size: int, want: str,
              is_file: bool, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        wipe(target, size, is_file)
        start = time.perf_counter()
        for cmd in cmds:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        got = sha256(target)
        if got != want:
            raise SystemExit(f"{name}: target sha256 {got} != image {want}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop", action="store_true", help="target a loop device, not a file")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    runs = 1 if size >= BIG else args.runs
    for tool in ("bmaptool", "img2simg", "simg2img", "dd", "sync"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        work = Path(tmp)
        files = prepare(work, size)
        want = sha256(str(files["raw"]))
        backing = work / "target.img"
        wipe(str(backing), size, True)
        dev = None
        if args.loop:
            dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                                 capture_output=True, text=True).stdout.strip()
        try:
            target = dev or str(backing)
            results = {name: time_tool(name, cmds, target, size, want, dev is None, runs)
                       for name, cmds in commands(files, target, dev is not None).items()}
        finally:
            if dev:
                subprocess.run(["losetup", "-d", dev], check=False)
    report(results, size, runs, "loop device" if args.loop else "file")
    return 0


def report(results: dict[str, list[float]], size: int, runs: int, kind: str) -> None:
    base = statistics.median(results["dd bs=4M"])
    print(f"restore of a {size >> 20} MiB phone image onto a {kind}, median of {runs} run(s)")
    print(f"{'tool':34} {'median s':>9} {'MiB/s':>8} {'vs dd':>7}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:34} {med:9.2f} {size / med / (1 << 20):8.0f} {med / base:7.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
