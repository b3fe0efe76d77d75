"""Forgetting snapshots, the retention policy of prune, and garbage collection.

Garbage collection never deletes before the replacement is durable: live chunks of a pack that
also holds garbage are copied (verified) into new packs, whose packs and indexes are published
first; only then are the old indexes removed, and only then the old packs. A crash at any point
leaves every snapshot's chunks reachable through some durable index.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from formats.errors import FormatError
from imager.durable import fsync_dir
from imager.errors import VerificationFailed
from imager.repo import snapshot as snapshots
from imager.repo.faults import crash_point
from imager.repo.pack import PackWriter
from imager.repo.store import Repository

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What a garbage collection did."""

    packs_deleted: int = 0
    packs_rewritten: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0
    bytes_written: int = 0
    leftovers_removed: list[str] = field(default_factory=list)


def select_keep(docs: list[dict[str, Any]], *, last: int = 0, daily: int = 0, weekly: int = 0,
                monthly: int = 0) -> dict[str, list[str]]:
    """Snapshots a policy keeps: id -> reasons. Each rule keeps the newest of each of its
    N most recent periods (UTC days, ISO weeks, months), as restic and borg do."""
    keep: dict[str, list[str]] = {}
    newest_first = sorted(docs, key=lambda d: (d.get("time_unix", 0), d["id"]), reverse=True)
    for i, doc in enumerate(newest_first[:last]):
        keep.setdefault(doc["id"], []).append(f"last {i + 1}")
    rules = (("daily", daily, "%Y-%m-%d"), ("weekly", weekly, "%G-W%V"), ("monthly", monthly, "%Y-%m"))
    for name, count, fmt in rules:
        seen: list[str] = []
        for doc in newest_first:
            if len(seen) >= count:
                break
            when = dt.datetime.fromtimestamp(doc.get("time_unix", 0), tz=dt.timezone.utc)
            bucket = when.strftime(fmt)
            if bucket not in seen:
                seen.append(bucket)
                keep.setdefault(doc["id"], []).append(f"{name} {bucket}")
    return keep


def forget(repo: Repository, snap_ids: list[str]) -> list[str]:
    """Remove snapshots (ids or unique prefixes); returns the full ids removed."""
    docs = [snapshots.resolve(repo, ref) for ref in snap_ids]
    removed = []
    for doc in docs:
        snapshots.delete(repo, doc["id"])
        removed.append(doc["id"])
        crash_point("snapshot-deleted")
    return removed


def remove_leftovers(repo: Repository) -> list[str]:
    """Delete what interrupted runs left: temp files and packs without an index.

    Only safe under the repository lock: then no live writer owns any of them.
    """
    removed = []
    for tmp in list((repo.path / "tmp").glob("*")) + list(repo.path.glob("*/.*.tmp")):
        tmp.unlink(missing_ok=True)
        removed.append(str(tmp.relative_to(repo.path)))
    for pack_id in sorted(repo.pack_ids_on_disk() - set(repo.pack_indexes) - set(repo.index_errors)):
        path = repo.pack_path(pack_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        removed.append(str(path.relative_to(repo.path)))
    return removed


def collect_garbage(repo: Repository) -> GcReport:
    """Remove every chunk no snapshot references (see the module docstring for the order).

    Raises:
        FormatError: a snapshot is damaged (nothing is deleted: its chunks cannot be known).
        VerificationFailed: a live chunk to copy is damaged (nothing old is deleted).
    """
    if repo.index_errors:
        raise VerificationFailed(f"{repo.path}: damaged pack index(es), prune refused: "
                                 + "; ".join(str(e) for e in repo.index_errors.values()))
    report = GcReport(leftovers_removed=remove_leftovers(repo))
    live = set()
    for doc in snapshots.list_snapshots(repo, strict=True):
        live |= snapshots.digests_of(doc)
    claimed: set[bytes] = set()
    doomed: list[str] = []
    writer = PackWriter(repo)
    try:
        for pack_id in sorted(repo.pack_indexes):
            if _sweep_pack(repo, pack_id, live, claimed, writer, report):
                doomed.append(pack_id)
        writer.flush()
    except FormatError as err:
        writer.abort()
        raise VerificationFailed(f"prune stopped, nothing deleted: {err} (run `imager check "
                                 f"--read-data {repo.path}`)") from err
    report.bytes_written = writer.bytes_written
    crash_point("gc-new-packs")
    _delete_packs(repo, doomed, report)
    return report


def _sweep_pack(repo: Repository, pack_id: str, live: set[bytes], claimed: set[bytes],
                writer: PackWriter, report: GcReport) -> bool:
    """Copy the pack's live chunks if it holds garbage; True when the pack is to be deleted."""
    entries = repo.pack_indexes[pack_id].entries
    keep = []
    for entry in entries:
        if entry.digest in live and entry.digest not in claimed:
            keep.append(entry)
            claimed.add(entry.digest)
    if len(keep) == len(entries):
        return False
    report.chunks_removed += len(entries) - len(keep)
    if keep:
        report.packs_rewritten += 1
    for entry in keep:
        repo.read_record(pack_id, entry)  # verify before copying: never spread a damaged chunk
        writer.add_stored(entry.digest, entry.raw_len, repo.read_stored(pack_id, entry), entry.flags)
    return True


def _delete_packs(repo: Repository, doomed: list[str], report: GcReport) -> None:
    for pack_id in doomed:
        repo.index_path(pack_id).unlink()
    if doomed:
        fsync_dir(repo.path / "index")
    crash_point("gc-indexes-deleted")
    for pack_id in doomed:
        path = repo.pack_path(pack_id)
        report.bytes_freed += path.stat().st_size
        repo.forget_fd(pack_id)
        path.unlink()
        fsync_dir(path.parent)
        report.packs_deleted += 1
    repo.reload_index()
