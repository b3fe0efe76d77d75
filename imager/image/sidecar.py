"""The manifest saved beside an image whose format has no room for it (IMAGE.json).

Raw images, Android sparse images and E01 sets (beside the first segment) all keep imager's
manifest here; one module reads and writes it for all of them.
"""

from __future__ import annotations

from typing import Any

from formats.manifest import Manifest, parse_manifest
from imager.durable import write_atomic
from imager.errors import BadInput

MAX_MANIFEST = 256 << 20   # a manifest is a few MiB even for a 1 TiB device; never read more


def sidecar_path(image: str) -> str:
    """Where the manifest of ``image`` (or of a set's first segment) lives: IMAGE.json."""
    return image + ".json"


def load_sidecar(image: str) -> Manifest | None:
    """The manifest beside ``image``; None when there is none (an image made by another tool).

    Raises:
        BadInput: it cannot be read or is implausibly large.
        FormatError: it is damaged (its own checksum fails).
    """
    path = sidecar_path(image)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BadInput(f"{path}: cannot read: {err.strerror}") from err
    if len(raw) > MAX_MANIFEST:
        raise BadInput(f"{path}: larger than {MAX_MANIFEST} bytes; not a manifest")
    return parse_manifest(raw)


def save_sidecar(image: str, manifest: Any) -> None:
    """Write the manifest beside ``image`` atomically (old or new, never half)."""
    data = manifest.to_json()
    write_atomic(sidecar_path(image), data if isinstance(data, bytes) else data.encode())
