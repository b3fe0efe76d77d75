"""Time ``imager rescue`` against GNU ``ddrescue -d`` on the same faulty loop device.

A deterministic image (fixtures/faulty_device.make_image) is served by faultyfs with bad
sectors scattered in clusters (a scratched area) plus a few slow ones; both tools rescue it
through a read-only direct-I/O loop device into a fresh output + mapfile. Prints wall time,
rescued bytes and bad bytes (counted by ``ddrescuelog``) and the reads the device served.

Usage: ``python -m bench.rescue [--size 64M] [--bad 400] [--retries 1] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.faulty_device import faulty_device, make_image


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.lower().rstrip("ib")
    return int(t[:-1]) * units[t[-1]] if t[-1] in units else int(t)


def bad_layout(sectors: int, count: int, seed: int) -> list[int]:
    """``count`` bad sectors: half scattered, half in a few scratched runs."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(sectors), count // 2))
    while len(bad) < count:
        start = rng.randrange(sectors - 64)
        bad.update(range(start, start + rng.randrange(1, 64)))
    return sorted(bad)[:count]


def count_blocks(mapfile: Path, states: str) -> int:
    out = subprocess.run(["ddrescuelog", "-b512", f"-l{states}", str(mapfile)], check=True,
                         capture_output=True, text=True).stdout
    return len(out.split())


def run(cmd: list[str], dev: object) -> tuple[float, dict]:
    before = dev.stats()
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.monotonic() - start
    after = dev.stats()
    return seconds, {k: after[k] - before[k] for k in ("reads", "failed")}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=64 << 20)
    ap.add_argument("--bad", type=int, default=400)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rescue-") as tmp:
        work = Path(tmp)
        make_image(work / "disk.img", args.size, args.seed)
        bad = bad_layout(args.size // 512, args.bad, args.seed)
        with faulty_device(work / "disk.img", bad=bad, loop=True) as dev:
            tools = {
                "ddrescue": ["ddrescue", "-q", "-d", "-b512", f"-r{args.retries}", dev.source,
                             str(work / "dd.raw"), str(work / "dd.map")],
                "imager": [sys.executable, "-m", "imager", "rescue", dev.source,
                           str(work / "im.raw"), "--mapfile", str(work / "im.map"),
                           "--retries", str(args.retries), "--no-progress"],
            }
            print(f"size {args.size} B, {len(bad)} bad sectors, retries {args.retries}")
            for name, cmd in tools.items():
                seconds, reads = run(cmd, dev)
                short = "dd" if name == "ddrescue" else "im"
                mapfile = work / f"{short}.map"
                print(f"{name:9s} {seconds:7.2f} s  rescued {count_blocks(mapfile, '+') * 512} B"
                      f"  bad {count_blocks(mapfile, '-') * 512} B"
                      f"  reads {reads['reads']} (failed {reads['failed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
