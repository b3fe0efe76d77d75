"""How repository facts are written for people (the CLI prints these strings)."""

from __future__ import annotations

from typing import Any


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def device_of(doc: dict[str, Any]) -> str:
    """A short device description from the snapshot's source identity."""
    src = doc.get("source") or {}
    words = [src.get("model", ""), src.get("serial", "")]
    text = " ".join(w for w in words if w) or src.get("path", "") or "?"
    return text
