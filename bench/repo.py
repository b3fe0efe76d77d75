"""Second-backup cost: ``imager backup`` into a repository vs a full ``imager acquire``.

Builds the sample phone (fixtures/phone.py), backs it up once, changes ~3 % of its 4 MiB chunks
(random bytes, the worst case for compression), then measures on the changed phone:
a full ``imager acquire`` (native image), the second ``imager backup`` and a third backup of
the unchanged phone. Prints wall time, bytes written (image size / repository growth) for each.

Usage: ``python -m bench.repo [--size 1G] [--changed 0.03] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.phone import build_phone, parse_size

CHUNK = 4 << 20


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(*args: str | Path) -> float:
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "imager", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - began


def change(image: Path, fraction: float, seed: int) -> int:
    """Overwrite ``fraction`` of the chunks with random bytes; returns how many."""
    rng = random.Random(seed)
    chunks = image.stat().st_size // CHUNK
    picked = rng.sample(range(chunks), max(1, round(chunks * fraction)))
    with open(image, "r+b") as f:
        for index in picked:
            f.seek(index * CHUNK)
            f.write(rng.randbytes(CHUNK))
    return len(picked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--changed", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-repo-", dir="/var/tmp") as tmp:
        d = Path(tmp)
        phone = build_phone(d / "phone.img", size, args.seed)
        repo = d / "repo"
        t_first = timed("backup", phone, repo, "-q")
        first = du(repo)
        n = change(phone, args.changed, args.seed)
        t_acquire = timed("acquire", phone, d / "full.img")
        image = du(d / "full.img")
        t_second = timed("backup", phone, repo, "-q")
        second = du(repo) - first
        t_third = timed("backup", phone, repo, "-q")
        third = du(repo) - first - second
    mib = 1 << 20
    print(f"phone {size // mib} MiB, {n} of {size // CHUNK} 4 MiB chunks changed "
          f"({100 * n * CHUNK / size:.1f} %)")
    print(f"{'run':34} {'seconds':>8} {'bytes written':>16}")
    for label, secs, nbytes in (("first backup (empty repository)", t_first, first),
                                ("full imager acquire (native)", t_acquire, image),
                                ("second backup (changed phone)", t_second, second),
                                ("third backup (unchanged phone)", t_third, third)):
        print(f"{label:34} {secs:8.2f} {nbytes:16,d}")
    print(f"second backup: {t_second / t_acquire:.2f}x the acquire time, "
          f"{100 * second / image:.1f} % of its bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
