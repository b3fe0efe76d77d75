"""Snapshot documents: listing, resolving ``REPO@ID`` / ``REPO@latest``, publishing, deleting.

A snapshot is a JSON document (formats/repo.py) in ``snapshots/<id>.json``. Its ``ranges``
cover the device exactly, in LBA order; a DATA range lists its chunks as ``[count, digest]``
pairs, other kinds store no chunk at all.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from formats.errors import FormatError
from formats.extent import Extent, Kind
from formats.manifest import parse_manifest
from formats.repo import build_snapshot, parse_snapshot
from imager.durable import fsync_dir, write_atomic
from imager.errors import BadInput, UsageError
from imager.repo.store import Repository

log = logging.getLogger(__name__)


def split_ref(spec: str) -> tuple[str, str]:
    """``"REPO@ID"`` -> ``("REPO", "ID")`` (the last ``@`` separates)."""
    repo, sep, ref = spec.rpartition("@")
    if not sep or not repo or not ref:
        raise UsageError(f"{spec!r}: expected REPO@ID (or REPO@latest)")
    return repo, ref


def snapshot_path(repo: Repository, snap_id: str) -> Path:
    return repo.path / "snapshots" / f"{snap_id}.json"


def load_snapshot(path: Path) -> dict[str, Any]:
    """Parse and verify one snapshot file."""
    return parse_snapshot(path.read_bytes(), where=f"snapshot {path}")


def list_snapshots(repo: Repository, *, strict: bool = False) -> list[dict[str, Any]]:
    """Every snapshot, oldest first. A damaged one is logged and skipped unless ``strict``."""
    docs = []
    for path in sorted((repo.path / "snapshots").glob("*.json")):
        try:
            docs.append(load_snapshot(path))
        except FormatError as err:
            if strict:
                raise
            log.warning("skipping damaged snapshot: %s", err)
    return sorted(docs, key=lambda d: (d.get("time_unix", 0), d["id"]))


def resolve(repo: Repository, ref: str) -> dict[str, Any]:
    """The snapshot ``ref`` names: ``latest``, a full id or a unique id prefix.

    Raises:
        BadInput: no such snapshot, or the prefix is ambiguous.
    """
    docs = list_snapshots(repo)
    if ref == "latest":
        if not docs:
            raise BadInput(f"{repo.path}: the repository has no snapshots")
        return docs[-1]
    hits = [d for d in docs if d["id"] == ref] or [d for d in docs if d["id"].startswith(ref)]
    if not hits:
        raise BadInput(f"{repo.path}: no snapshot {ref!r} (see `imager snapshots {repo.path}`)")
    if len(hits) > 1:
        raise BadInput(f"{repo.path}: snapshot id {ref!r} is ambiguous: "
                       + ", ".join(d["id"] for d in hits))
    return hits[0]


def new_snapshot_id(repo: Repository) -> str:
    """A fresh 8-hex-digit id not used in this repository."""
    while True:
        snap_id = uuid.uuid4().hex[:8]
        if not snapshot_path(repo, snap_id).exists():
            return snap_id


def publish(repo: Repository, doc: dict[str, Any]) -> bytes:
    """Write the snapshot durably (the last step of a backup); returns its bytes."""
    data = build_snapshot(doc)
    write_atomic(snapshot_path(repo, doc["id"]), data)
    return data


def delete(repo: Repository, snap_id: str) -> None:
    """Remove one snapshot durably (its chunks become garbage for prune)."""
    snapshot_path(repo, snap_id).unlink()
    fsync_dir(repo.path / "snapshots")


def range_extents(doc: dict[str, Any]) -> Iterator[tuple[Extent, str | None]]:
    """Every chunk-or-run of the snapshot in LBA order: (extent, hex digest for DATA else None)."""
    for rng in doc["ranges"]:
        kind = Kind(rng["kind"])
        if kind is Kind.DATA:
            lba = rng["lba"]
            for count, digest in rng["chunks"]:
                yield Extent(lba, count, Kind.DATA), digest
                lba += count
        else:
            yield Extent(rng["lba"], rng["count"], kind, rng.get("fill")), None


def digests_of(doc: dict[str, Any]) -> set[bytes]:
    """Every chunk digest the snapshot references (data chunks and raw table sectors)."""
    out = {bytes.fromhex(d) for rng in doc["ranges"] if rng["kind"] == Kind.DATA.value
           for _, d in rng["chunks"]}
    return out | {bytes.fromhex(d) for _, _, d in doc.get("table_sectors", [])}


def table_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's partition table (DiskTable.to_dict()), {} when there is none."""
    table = doc.get("table") or (doc.get("manifest") or {}).get("table") or {}
    return table if isinstance(table, dict) else {}


def data_digests(doc: dict[str, Any]) -> list[str]:
    """The DATA chunks' digests in LBA order (hex)."""
    return [d for rng in doc["ranges"] if rng["kind"] == Kind.DATA.value for _, d in rng["chunks"]]


def embed_manifest(manifest: Any, digests: list[str], table_refs: list[list[Any]]
                   ) -> tuple[dict[str, Any] | None, bool]:
    """The manifest as stored in a snapshot: (JSON object, checks_from_ranges).

    When the manifest's per-chunk checks are sha256 and equal the snapshot's chunk digests
    (the pipeline and the repository hash the same bytes), they are left out and rebuilt from
    ``ranges`` on load, so a snapshot does not carry every digest twice; the manifest's own
    checksum then proves on load that the two still agree. Its raw table sectors are stored
    as chunks (``table_refs``: [lba, sectors, digest]) so identical tables are stored once.
    """
    if manifest is None or not hasattr(manifest, "to_json"):
        return None, False
    obj = json.loads(manifest.to_json())
    if table_refs:
        del obj["table_sectors"]
    if obj.get("chunk_check") == "sha256" and obj.get("chunk_checks") == digests:
        del obj["chunk_checks"]
        return obj, True
    return obj, False


def load_manifest(doc: dict[str, Any], repo: Repository) -> Any:
    """The snapshot's Manifest (formats.manifest), or None when it has none.

    Raises:
        FormatError: the manifest (with the checks rebuilt from ranges) fails its checksum,
            or a table-sector chunk is damaged.
    """
    obj = doc.get("manifest")
    if not isinstance(obj, dict):
        return None
    obj = dict(obj)
    if doc.get("manifest_checks_from_ranges"):
        obj["chunk_checks"] = data_digests(doc)
    if "table_sectors" not in obj:
        obj["table_sectors"] = [
            [lba, base64.b64encode(repo.read_chunk(bytes.fromhex(d))).decode()]
            for lba, _, d in doc.get("table_sectors", [])]
    return parse_manifest(json.dumps(obj).encode())
