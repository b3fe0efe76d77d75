"""Verifying a repository: indexes, packs, snapshots and (``read_data``) every chunk's digest.

A damaged chunk is named with everything a user needs to judge the damage: the pack, the chunk
digest and offset, and every snapshot (with the partitions and LBAs) that references it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from formats.errors import FormatError
from formats.repo import PACK_HEADER, parse_pack_header
from imager.repo import lock as repo_lock
from imager.repo import snapshot as snapshots
from imager.repo.store import Repository

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """Errors (the repository is damaged) and notes (harmless leftovers)."""

    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    packs: int = 0
    chunks: int = 0
    snapshots: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def partitions_at(doc: dict[str, Any], lba: int, count: int) -> list[str]:
    """Names of the partitions of the snapshot's table that overlap ``lba``+``count``."""
    table = snapshots.table_of(doc)
    names = []
    for part in table.get("partitions", []) if isinstance(table, dict) else []:
        first, last = part.get("first_lba"), part.get("last_lba")
        if isinstance(first, int) and isinstance(last, int) and first < lba + count and lba <= last:
            names.append(part.get("name") or f"#{part.get('index', '?')}")
    return names or ["(outside any partition)"]


def users_of(docs: list[dict[str, Any]], digest: bytes) -> list[str]:
    """'snapshot ab12cd34 LBA 2048+2048 (userdata)' for every place that references ``digest``."""
    hexd, out = digest.hex(), []
    for doc in docs:
        for extent, d in snapshots.range_extents(doc):
            if d == hexd:
                parts = ", ".join(partitions_at(doc, extent.start_lba, extent.count))
                out.append(f"snapshot {doc['id']} LBA {extent.start_lba}+{extent.count} ({parts})")
        for lba, count, d in doc.get("table_sectors", []):
            if d == hexd:
                out.append(f"snapshot {doc['id']} LBA {lba}+{count} (partition table sectors)")
    return out


def check(repo: Repository, *, read_data: bool = False,
          progress: Callable[[int], None] | None = None) -> CheckReport:
    """Verify the repository; never modifies it."""
    report = CheckReport()
    for pack_id, err in repo.index_errors.items():
        report.errors.append(f"pack index {pack_id}: {err}")
    docs = _check_snapshots(repo, report)
    _check_packs(repo, report)
    _check_leftovers(repo, report)
    if read_data:
        _read_all(repo, docs, report, progress)
    return report


def _check_snapshots(repo: Repository, report: CheckReport) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((repo.path / "snapshots").glob("*.json")):
        try:
            docs.append(snapshots.load_snapshot(path))
        except FormatError as err:
            report.errors.append(str(err))
    report.snapshots = len(docs)
    for doc in docs:
        missing = [d for d in snapshots.digests_of(doc) if not repo.has_chunk(d)]
        for digest in missing:
            report.errors.append(f"chunk {digest.hex()} is in no pack index, needed by "
                                 + "; ".join(users_of([doc], digest)))
        if not missing:
            _check_manifest(repo, doc, report)
    return docs


def _check_manifest(repo: Repository, doc: dict[str, Any], report: CheckReport) -> None:
    """The embedded manifest, with its chunk checks rebuilt from ``ranges``, must verify."""
    try:
        manifest = snapshots.load_manifest(doc, repo)
    except (FormatError, OSError) as err:
        report.errors.append(f"snapshot {doc['id']}: manifest: {err}")
        return
    if manifest is not None and (manifest.sector_count, manifest.chunk_sectors) != (
            doc["sector_count"], doc["chunk_sectors"]):
        report.errors.append(f"snapshot {doc['id']}: manifest geometry "
                             f"{manifest.sector_count}/{manifest.chunk_sectors} differs from "
                             f"the snapshot's {doc['sector_count']}/{doc['chunk_sectors']}")


def _check_packs(repo: Repository, report: CheckReport) -> None:
    for pack_id, index in sorted(repo.pack_indexes.items()):
        report.packs += 1
        report.chunks += len(index.entries)
        path = repo.pack_path(pack_id)
        try:
            with open(path, "rb") as f:
                head = f.read(PACK_HEADER.size)
                size = f.seek(0, 2)
            parse_pack_header(head)
        except FileNotFoundError:
            report.errors.append(f"pack {pack_id}: missing ({len(index.entries)} chunks lost)")
            continue
        except FormatError as err:
            report.errors.append(f"pack {pack_id}: {err}")
            continue
        if size != index.pack_size:
            report.errors.append(f"pack {pack_id}: size {size} bytes, its index says {index.pack_size}")


def _check_leftovers(repo: Repository, report: CheckReport) -> None:
    unindexed = repo.pack_ids_on_disk() - set(repo.pack_indexes) - set(repo.index_errors)
    for pack_id in sorted(unindexed):
        report.notes.append(f"pack {pack_id} has no index (left by an interrupted run; "
                            "no snapshot uses it; `imager prune` removes it)")
    tmp = list((repo.path / "tmp").glob("*"))
    if tmp:
        report.notes.append(f"{len(tmp)} temporary file(s) in tmp/ (left by an interrupted run; "
                            "`imager prune` removes them)")
    holder = repo_lock.read_holder(repo.path)
    if holder is not None and repo_lock.holder_is_dead(holder):
        report.notes.append(f"stale lock: {repo_lock.describe(holder)} is no longer running "
                            "(the next writer needs --break-lock)")


def _read_all(repo: Repository, docs: list[dict[str, Any]], report: CheckReport,
              progress: Callable[[int], None] | None) -> None:
    for pack_id, index in sorted(repo.pack_indexes.items()):
        for entry in index.entries:
            try:
                repo.read_record(pack_id, entry)
            except (FormatError, OSError) as err:
                users = users_of(docs, entry.digest) or ["no snapshot (garbage for prune)"]
                report.errors.append(f"pack {pack_id}: damaged {repo.where(pack_id, entry)}: "
                                     f"{err}; affects " + "; ".join(users))
            report.bytes_read += entry.record_size
            if progress:
                progress(entry.record_size)
