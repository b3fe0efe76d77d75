"""``python -m bench``: the whole side-by-side suite (bench/suite.py); ``python -m bench NAME ...``
runs the named per-area benchmarks instead (bench/acquire.py, restore.py, sparse.py, ...).

Options (``python -m bench --size 512M --runs 1``) go to the suite; ``python -m bench all`` runs
every per-area module with its defaults, as this command did before the suite existed.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

NOT_BENCHES = {"suite", "peers"}  # the suite runs on its own; peers is its library


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        from bench import suite

        return suite.main(argv)
    names = argv
    if argv == ["all"]:
        names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                       if not m.name.startswith("_") and m.name not in NOT_BENCHES)
    status = 0
    for name in names:
        print(f"== bench.{name}", flush=True)
        status |= int(importlib.import_module(f"bench.{name}").main([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
