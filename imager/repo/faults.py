"""A hidden hook that kills the process at a named point, so tests can prove crash safety.

``IMAGER_REPO_CRASH=point[:n][,point[:n]...]`` makes the n-th (default first) arrival at
``point`` send SIGKILL to this very process: no cleanup, no finally blocks, exactly like
``kill -9`` or a power cut after the data reached the page cache. Unset, it costs a dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "IMAGER_REPO_CRASH"
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here when ``IMAGER_REPO_CRASH`` names this point (tests only)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _seen[name] = _seen.get(name, 0) + 1
    for item in spec.split(","):
        point, _, nth = item.partition(":")
        if point == name and _seen[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
