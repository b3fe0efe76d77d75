"""Time imager's Android sparse export/expand against AOSP ``img2simg``/``simg2img``.

The same sample phone image (fixtures/phone.py) goes through each pair of tools:

* raw -> simg: ``img2simg RAW OUT`` vs ``imager export RAW --to simg OUT`` (same 4096 blocks,
  both turn uniform blocks into FILL chunks);
* simg -> raw: ``simg2img SIMG OUT`` vs ``imager export SIMG --to raw OUT`` vs
  ``imager restore SIMG OUT --yes`` (verifying restore, onto a file of 0xEE bytes).

Each run ends with ``sync OUT`` inside the timing. Every output is checked before its time
counts (a simg by expanding it with simg2img; a raw by sha256 against the image). Prints the
median per tool, throughput, output size and the ratio to the AOSP tool of the same direction.

Usage: ``python -m bench.sparse [--size 512M] [--runs 3]``.
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

IMAGER = [sys.executable, "-m", "imager"]


def clear(path: Path, size: int | None = None) -> None:
    """Remove an output (or, with ``size``, make it a file of 0xEE bytes to overwrite)."""
    path.unlink(missing_ok=True)
    if size is not None:
        block = b"\xee" * (4 << 20)
        with open(path, "wb") as f:
            f.writelines(block[:min(len(block), size - off)] for off in range(0, size, len(block)))
            os.fsync(f.fileno())


def run_timed(cmd: list[str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", str(out)], check=True)
    return time.perf_counter() - start


def to_simg(raw: Path, work: Path, runs: int, want: str) -> dict[str, tuple[list[float], int]]:
    out = work / "out.simg"
    tools = {"img2simg": ["img2simg", str(raw), str(out)],
             "imager export --to simg": IMAGER + ["export", str(raw), "--to", "simg", str(out)]}
    results = {}
    for name, cmd in tools.items():
        times = []
        for _ in range(runs):
            clear(out)
            times.append(run_timed(cmd, out))
            check = work / "check.raw"
            clear(check)
            subprocess.run(["simg2img", str(out), str(check)], check=True)
            if sha256(check) != want:
                raise SystemExit(f"{name}: simg2img of its output differs from the image")
        results[name] = (times, out.stat().st_size)
    return results


def from_simg(simg: Path, work: Path, runs: int, want: str, size: int
              ) -> dict[str, tuple[list[float], int]]:
    out = work / "out.raw"
    tools = {"simg2img": (["simg2img", str(simg), str(out)], None),
             "imager export --to raw": (IMAGER + ["export", str(simg), "--to", "raw", str(out)],
                                        None),
             "imager restore (verified)": (IMAGER + ["restore", str(simg), str(out), "--yes",
                                                     "-q"], size)}
    results = {}
    for name, (cmd, prefill) in tools.items():
        times = []
        for _ in range(runs):
            clear(out, prefill)
            times.append(run_timed(cmd, out))
            if sha256(out) != want:
                raise SystemExit(f"{name}: output differs from the image")
        results[name] = (times, out.stat().st_size)
    return results


def report(title: str, results: dict[str, tuple[list[float], int]], base: str, size: int) -> None:
    ref = statistics.median(results[base][0])
    print(title)
    print(f"  {'tool':28} {'median s':>9} {'MiB/s':>8} {'out MiB':>8} {f'vs {base}':>14}")
    for name, (times, out_size) in results.items():
        med = statistics.median(times)
        print(f"  {name:28} {med:9.2f} {size / med / (1 << 20):8.0f} "
              f"{out_size / (1 << 20):8.1f} {med / ref:13.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    for tool in ("img2simg", "simg2img", "sync"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        work = Path(tmp)
        raw = work / "phone.img"
        build_phone(raw, size, seed=1)
        want = sha256(raw)
        simg = work / "phone.simg"
        subprocess.run(["img2simg", str(raw), str(simg)], check=True)
        export = to_simg(raw, work, args.runs, want)
        expand = from_simg(simg, work, args.runs, want, size)
    print(f"{size >> 20} MiB phone image (fixtures/phone.py seed 1), median of {args.runs} runs")
    report("raw -> simg", export, "img2simg", size)
    report("simg -> raw", expand, "simg2img", size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
