"""Time ``imager acquire`` against ``zstd -3 -T2`` and ``dc3dd hash=sha256`` on one phone image.

All three read the same generated sample phone (fixtures/phone.py) from the page cache (a warm-up
read first) and write to the same directory; each run ends with ``sync`` inside the timing.
* imager: ``imager acquire SRC OUT --quiet`` (native image, sha256, zstd level 3, 4 MiB chunks);
* zstd: ``zstd -3 -T2 -q -f SRC -o OUT`` (compression only: no hash, not seekable);
* dc3dd: ``dc3dd if=SRC of=OUT hash=sha256`` (hash + raw copy, no compression).
Every output is checked before its time counts (imager: ``zstd -d`` sha256 == source).
Prints per-tool medians, throughput, output size and imager's time ratio to each peer.

Usage: ``python -m bench.acquire [--size 4G] [--runs 3] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.phone import build_phone, parse_size
from imager.hashing import file_sha256

IMAGER = [sys.executable, "-m", "imager"]


def sha256_of(cmd: list[str] | None, path: Path) -> str:
    """sha256 of a file, or of a command's stdout."""
    h = hashlib.sha256()
    if cmd is None:
        return file_sha256(path)
    proc = subprocess.Popen(cmd + [str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for block in iter(lambda: proc.stdout.read(1 << 22), b""):
        h.update(block)
    if proc.wait():
        raise SystemExit(f"{cmd[0]} failed on {path}")
    return h.hexdigest()


def commands(src: Path, out: Path) -> dict[str, list[str]]:
    return {"imager acquire": IMAGER + ["acquire", str(src), str(out), "--quiet"],
            "zstd -3 -T2": ["zstd", "-3", "-T2", "-q", "-f", str(src), "-o", str(out)],
            "dc3dd hash=sha256": ["dc3dd", f"if={src}", f"of={out}", "hash=sha256",
                                  "nwspc=on", f"log={out}.log"]}


def check(name: str, out: Path, want: str) -> None:
    got = sha256_of(["zstd", "-d", "-q", "-c"] if name != "dc3dd hash=sha256" else None, out)
    if got != want:
        raise SystemExit(f"{name}: output does not match the source ({got} != {want})")


def time_one(name: str, cmd: list[str], out: Path, want: str) -> float:
    for p in (out, Path(f"{out}.journal"), Path(f"{out}.log")):
        p.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["sync", str(out)], check=True)
    seconds = time.perf_counter() - start
    check(name, out, want)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4G", help="phone image size (default 4G)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    for tool in ("zstd", "dc3dd", "sgdisk", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (run .ci/setup)")
    size = parse_size(args.size)
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-acquire-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "phone.img"
        if not src.exists() or src.stat().st_size != size:
            build_phone(src, size, seed=1)
        want = sha256_of(None, src)  # also warms the page cache
        results = {}
        for name, cmd in commands(src, work / "out").items():
            times = [time_one(name, cmd, work / "out", want) for _ in range(args.runs)]
            results[name] = (statistics.median(times), (work / "out").stat().st_size)
        report(size, results)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(size: int, results: dict[str, tuple[float, int]]) -> None:
    mine = results["imager acquire"][0]
    print(f"source: sample phone, {size / 2**30:.2f} GiB, {os.cpu_count()} CPUs")
    for name, (seconds, out_size) in results.items():
        ratio = "" if name == "imager acquire" else f"  imager/this = {mine / seconds:.2f}x"
        print(f"{name:20} median {seconds:7.2f} s  {size / seconds / 2**20:8.1f} MiB/s  "
              f"output {out_size / 2**20:9.1f} MiB{ratio}")


if __name__ == "__main__":
    sys.exit(main())
