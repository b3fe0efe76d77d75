"""``python -m bench.suite``: imager's verbs against the peer tools, side by side, one command.

Builds (once, cached in ``bench-out/``) the sample phone image with fixtures/phone.py at
``--size`` (default 4G), its bmap and its Android sparse form, acquires a reference native image,
then for ``--runs`` rounds (default 3) runs every case once per round, alternating: imager
acquire / verify / restore (chunk verification only, and with read-back) / export to simg and the
peers (bench/peers.py). Every run starts from a warm page cache (the input is read first), writes
to a fresh output and ends with ``sync OUT`` inside its time. Peak memory is the child's
``ru_maxrss`` from ``os.wait4``. Each imager output is checked on its first run (sha256 of the
decompressed/written bytes == the phone image's) before its time counts.

Then the scale check: a ``--scale-size`` (default 64G) mostly-empty device (sparse file, GPT by
sgdisk, ~256 MiB of data) goes through the same imager verbs once, for time and peak RSS.

Prints (and writes to ``bench-out/report-SIZE.md``) markdown tables: per-case medians, MiB/s,
peak RSS and output size; the issue's targets as measured ratios; the scale table.

Usage: ``python -m bench.suite [--size 4G] [--runs 3] [--scale-size 64G | --no-scale]
[--dir bench-out]`` (``python -m bench`` with no module name runs this).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers
from fixtures.phone import build_phone, parse_size
from imager.hashing import file_sha256

MiB = 1 << 20
IMAGER = [sys.executable, "-m", "imager"]
RSS_LIMIT_MIB = 256
SCALE_CASES = ("imager acquire", "imager verify", "imager restore --no-verify", "imager restore",
               "imager export imgz --to simg")
TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time, for a clean peak RSS
# (ours, peer, limit): ratio of median wall times, from the issue
TARGETS = (("imager acquire", "zstd -3 -T2", 1.0), ("imager acquire", "dc3dd hash=sha256", 0.35),
           ("imager restore --no-verify", "bmaptool copy", 1.0),
           ("imager restore", "bmaptool copy", 1.6), ("imager verify", "sha256sum", 0.6),
           ("imager export raw --to simg", "img2simg", 1.0))


@dataclass
class Case:
    """One thing to time: ``cmds`` run in order; ``out`` is removed before each run."""

    name: str
    cmds: peers.Cmds
    out: Path | None = None
    check: Callable[[], None] | None = None   # run once, after the first run
    sized: bool = False                        # report the output's size
    ours: bool = False


@dataclass
class Result:
    """Every run of one case."""

    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    out_bytes: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, object]:
        return {"seconds": self.seconds, "median": self.median, "peak_rss_kib": max(self.rss_kib),
                "out_bytes": self.out_bytes}


def run_cmd(cmd: list[str]) -> int:
    """Run one command to completion; returns its peak RSS in KiB.

    A child's ``ru_maxrss`` (os.wait4) starts at its parent's RSS when it forks (Linux keeps the
    high-water mark across exec), so ours would report this ~45 MiB process for ``dd``. When
    GNU time is installed it runs the command instead: its own child starts from a tiny process.
    """
    with tempfile.NamedTemporaryFile("w+") as rss, tempfile.TemporaryFile() as err:
        wrapped = [TIME, "-f", "%M", "-o", rss.name, *cmd] if TIME else cmd
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
        return int(rss.read().split()[-1]) if TIME else usage.ru_maxrss


def outputs(out: Path) -> list[Path]:
    """The output and its companions (journal, reports, E01 segments)."""
    return sorted(p for p in out.parent.glob(out.name + "*") if p.is_file())


def time_case(case: Case) -> tuple[float, int, int]:
    """(seconds, peak RSS KiB, output bytes) of one run."""
    if case.out is not None:
        for p in outputs(case.out):
            p.unlink()
    start = time.perf_counter()
    rss = max(run_cmd(cmd) for cmd in case.cmds)
    seconds = time.perf_counter() - start
    size = 0
    if case.sized and case.out is not None:
        size = sum(p.stat().st_size for p in outputs(case.out)
                   if not p.name.endswith((".log", ".json", ".txt")))
    return seconds, rss, size


def sha256_file(path: Path) -> str:
    return file_sha256(path)


def sha256_cmd(cmd: list[str]) -> str:
    h = hashlib.sha256()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    while block := proc.stdout.read(8 * MiB):
        h.update(block)
    if proc.wait():
        raise SystemExit(f"{' '.join(cmd)} failed")
    return h.hexdigest()


def expect(name: str, got: str, want: str) -> None:
    if got != want:
        raise SystemExit(f"{name}: output bytes differ from the source ({got} != {want})")


def warm(path: Path) -> None:
    """Read the file so the next run starts with it in the page cache."""
    buf = bytearray(8 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def cached(path: Path, make: Callable[[Path], object], after: Path | None = None) -> Path:
    """``path``, made with ``make(tmp)`` unless it exists (and is newer than ``after``)."""
    if path.exists() and (after is None or path.stat().st_mtime >= after.stat().st_mtime):
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    make(tmp)
    tmp.rename(path)
    return path


@dataclass
class Inputs:
    """Everything the timed runs read: the raw device image and its other forms."""

    raw: Path
    want: str
    work: Path
    bmap: Path | None = None
    simg: Path | None = None
    ref: Path | None = None   # the native image verify/restore/export read


def prepare(base: Path, size: int, seed: int, build: Callable[[Path, int, int], object],
            tag: str, full: bool) -> Inputs:
    raw = cached(base / f"{tag}-{size // MiB}M-seed{seed}.img", lambda p: build(p, size, seed))
    work = base / f"work-{tag}-{size // MiB}M"
    work.mkdir(exist_ok=True)
    digest = cached(raw.with_suffix(".sha256"),
                    lambda p: p.write_text(sha256_file(raw)), raw).read_text()
    inputs = Inputs(raw, digest, work, ref=work / "out.imgz")
    if full:  # the peers' inputs, and a reference image made before the timed rounds
        inputs.bmap = cached(raw.with_suffix(".bmap"),
                             lambda p: peers.bmaptool_create(raw, p), raw)
        inputs.simg = cached(raw.with_suffix(".simg"),
                             lambda p: run_cmd(["img2simg", str(raw), str(p)]), raw)
        inputs.ref = work / "ref.imgz"
        for p in outputs(inputs.ref):
            p.unlink()
        run_cmd(IMAGER + ["acquire", str(raw), str(inputs.ref), "--quiet"])
    return inputs


def imager_cases(i: Inputs) -> list[Case]:
    """imager's verbs on ``i`` (the cases the scale check also runs)."""
    assert i.ref is not None
    w, ref = i.work, str(i.ref)
    # --zeros discard: ZERO chunks become holes (guaranteed zeros on a file), as bmaptool copy
    # leaves unmapped blocks as holes; the default (--zeros write) writes them as data
    restore = IMAGER + ["restore", ref, str(w / "target"), "--yes", "-q", "--include-identity",
                        "--zeros", "discard"]
    return [
        Case("imager acquire", [IMAGER + ["acquire", str(i.raw), str(w / "out.imgz"), "--quiet"]],
             w / "out.imgz", lambda: expect("acquire", sha256_cmd(
                 ["zstd", "-d", "-q", "-c", str(w / "out.imgz")]), i.want), sized=True, ours=True),
        Case("imager verify", [IMAGER + ["verify", ref, "--quiet"]], ours=True),
        Case("imager restore --no-verify", [restore + ["--no-verify"], peers.sync(w / "target")],
             w / "target", lambda: expect("restore", sha256_file(w / "target"), i.want),
             ours=True),
        Case("imager restore", [restore, peers.sync(w / "target")], w / "target",
             lambda: expect("restore", sha256_file(w / "target"), i.want), ours=True),
        Case("imager restore --no-verify --zeros write", [
            restore[:-2] + ["--no-verify"], peers.sync(w / "target")], w / "target", ours=True),
        Case("imager export raw --to simg", [IMAGER + ["export", str(i.raw), "--to", "simg",
                                                       str(w / "out.simg")], peers.sync(w / "out.simg")],
             w / "out.simg", lambda: check_simg(w / "out.simg", w / "check.raw", i.want),
             sized=True, ours=True),
        Case("imager export imgz --to simg", [IMAGER + ["export", ref, "--to", "simg",
                                                        str(w / "out2.simg")],
                                              peers.sync(w / "out2.simg")],
             w / "out2.simg", sized=True, ours=True),
    ]


def check_simg(simg: Path, raw: Path, want: str) -> None:
    raw.unlink(missing_ok=True)
    run_cmd(["simg2img", str(simg), str(raw)])
    try:
        expect("export --to simg", sha256_file(raw), want)
    finally:
        raw.unlink()


def all_cases(i: Inputs) -> list[Case]:
    """imager's cases interleaved with the peers doing the same job."""
    assert i.bmap is not None and i.simg is not None
    w, ours = i.work, {c.name: c for c in imager_cases(i)}
    return [
        ours["imager acquire"],
        Case("zstd -3 -T2", peers.zstd3(i.raw, w / "out.zst"), w / "out.zst", sized=True),
        Case("dc3dd hash=sha256", peers.dc3dd(i.raw, w / "out.dc3dd"), w / "out.dc3dd"),
        Case("dd bs=4M", peers.dd(i.raw, w / "out.dd"), w / "out.dd"),
        Case("ewfacquire -c deflate:fast", peers.ewfacquire(i.raw, w / "out-ewf"),
             w / "out-ewf", sized=True),
        ours["imager verify"],
        Case("sha256sum", peers.sha256sum(i.raw)),
        ours["imager restore --no-verify"],
        Case("bmaptool copy", peers.bmaptool_copy(i.raw, i.bmap, w / "target"), w / "target"),
        ours["imager restore"],
        ours["imager restore --no-verify --zeros write"],
        ours["imager export raw --to simg"],
        Case("img2simg", peers.img2simg(i.raw, w / "out.simg"), w / "out.simg", sized=True),
        ours["imager export imgz --to simg"],
        Case("simg2img", peers.simg2img(i.simg, w / "out.raw"), w / "out.raw"),
    ]


def measure(cases: list[Case], raw: Path, runs: int) -> dict[str, Result]:
    """``runs`` rounds over every case, alternating; checks run after each case's first run."""
    results = {c.name: Result() for c in cases}
    for round_no in range(runs):
        warm(raw)
        for case in cases:
            seconds, rss, size = time_case(case)
            r = results[case.name]
            r.seconds.append(seconds)
            r.rss_kib.append(rss)
            r.out_bytes = size or r.out_bytes
            print(f"  round {round_no + 1}: {case.name:32} {seconds:8.2f} s "
                  f"{rss / 1024:7.1f} MiB RSS", flush=True)
            if round_no == 0 and case.check is not None:
                case.check()
    for case in cases:
        if case.out is not None:
            for p in outputs(case.out):
                p.unlink()
    return results


def scale_device(path: Path, size: int, seed: int) -> None:
    """A mostly-empty device: sparse file, GPT by sgdisk, ~256 MiB of data in four places."""
    with open(path, "wb") as f:
        f.truncate(size)
    sys_mib = min(4096, size // MiB // 8)
    subprocess.run(["sgdisk", "-o", "-n", "1:2048:+64M", "-c", "1:boot_a", "-n",
                    f"2:0:+{sys_mib}M",
                    "-c", "2:system_a", "-n", "3:0:+512M", "-c", "3:vendor_a", "-n", "4:0:0",
                    "-c", "4:userdata", str(path)], check=True, capture_output=True)
    rng = random.Random(seed)
    first = 2048 * 512
    spots = [(first, 32, 1.0), (first + 64 * MiB, 128, 0.5), (first + (64 + sys_mib) * MiB, 32, 0.5),
             (size // 2, 32, 1.0), (size - 64 * MiB, 32, 1.0)]
    with open(path, "r+b") as f:
        for offset, mib, random_part in spots:
            f.seek(offset)
            for _ in range(mib):
                head = rng.randbytes(int(MiB * random_part))
                f.write(head + rng.randbytes(4096) * ((MiB - len(head)) // 4096))
        f.flush()
        os.fsync(f.fileno())


def target_rows(results: dict[str, Result]) -> list[str]:
    rows = ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    for ours, peer, limit in TARGETS:
        if ours in results and peer in results:
            ratio = results[ours].median / results[peer].median
            verdict = "met" if ratio <= limit else f"missed by {ratio / limit - 1:.0%}"
            rows.append(f"| {ours} / {peer} | {ratio:.3f}x | <= {limit}x | {verdict} |")
    if "imager acquire" in results and "zstd -3 -T2" in results:
        ratio = results["imager acquire"].out_bytes / results["zstd -3 -T2"].out_bytes
        verdict = "met" if ratio <= 1.03 else f"missed by {ratio / 1.03 - 1:.1%}"
        rows.append(f"| image size .imgz / zstd -3 | {ratio:.4f}x | <= 1.03x | {verdict} |")
    peak = max((max(r.rss_kib), n) for n, r in results.items() if n.startswith("imager"))
    verdict = "met" if peak[0] / 1024 <= RSS_LIMIT_MIB else "missed"
    rows.append(f"| peak RSS of any imager verb ({peak[1]}) | {peak[0] / 1024:.0f} MiB "
                f"| <= {RSS_LIMIT_MIB} MiB | {verdict} |")
    return rows


def case_rows(results: dict[str, Result], size: int) -> list[str]:
    rows = ["| case | median s | runs (s) | MiB/s | peak RSS MiB | output MiB |",
            "|---|---:|---|---:|---:|---:|"]
    for name, r in results.items():
        runs = " ".join(f"{s:.2f}" for s in r.seconds)
        out = f"{r.out_bytes / MiB:.1f}" if r.out_bytes else ""
        rows.append(f"| {name} | {r.median:.2f} | {runs} | {size / r.median / MiB:.0f} | "
                    f"{max(r.rss_kib) / 1024:.1f} | {out} |")
    return rows


def machine_rows() -> list[str]:
    info = peers.machine() | {f"tool {k}": v for k, v in peers.tool_versions().items()}
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4G", help="phone image size (default 4G)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale-size", default="64G", help="mostly-empty device (default 64G)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale check")
    parser.add_argument("--scale-only", action="store_true", help="only the scale check")
    parser.add_argument("--dir", default="bench-out", help="cache and work dir (bench-out)")
    args = parser.parse_args(argv)
    if missing := peers.missing_tools():
        raise SystemExit(f"bench needs {', '.join(missing)} (run .ci/setup)")
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    size, started = parse_size(args.size), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Measured {started}; machine:", "", *machine_rows(), ""]
    data: dict[str, object] = {"machine": peers.machine(), "started": started}
    if not args.scale_only:
        inputs = prepare(base, size, args.seed, build_phone, "phone", True)
        results = measure(all_cases(inputs), inputs.raw, args.runs)
        data["phone"] = {"size": size, "runs": args.runs,
                         "results": {k: v.to_dict() for k, v in results.items()}}
        lines += [(f"Sample phone (fixtures/phone.py seed {args.seed}), {size / 2**30:g} GiB, "
                  f"median of {args.runs} alternating runs, page cache warm:"), "",
                  *case_rows(results, size), "", "Targets (issue 10):", "",
                  *target_rows(results), ""]
    if not args.no_scale:
        lines += scale(base, parse_size(args.scale_size), args.seed, data)
    report = "\n".join(lines)
    print(report)
    tag = f"{size // MiB}M" if not args.scale_only else f"scale-{args.scale_size}"
    (base / f"report-{tag}.md").write_text(report + "\n")
    (base / f"report-{tag}.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


def scale(base: Path, size: int, seed: int, data: dict[str, object]) -> list[str]:
    """The scale check: imager's verbs (and zstd) once on a big mostly-empty device."""
    inputs = prepare(base, size, seed, scale_device, "empty", False)
    # verify/restore/export read what the acquire case wrote; --zeros write would write 64 GiB
    cases = [c for c in imager_cases(inputs) if c.name in SCALE_CASES]
    for case in cases:
        case.check = None  # correctness is checked at the phone size; these are about scale
    cases.insert(1, Case("zstd -3 -T2", peers.zstd3(inputs.raw, inputs.work / "out.zst"),
                         inputs.work / "out.zst", sized=True))
    results = measure(cases, inputs.raw, 1)
    data["scale"] = {"size": size, "results": {k: v.to_dict() for k, v in results.items()}}
    return [(f"Scale: {size / 2**30:g} GiB mostly-empty device (sparse file, GPT by sgdisk, "
            "256 MiB of data), one run:"), "", *case_rows(results, size), ""]


if __name__ == "__main__":
    sys.exit(main())
