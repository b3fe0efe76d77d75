"""RepoSink: the acquire pipeline's Sink that stores a device as a deduplicated snapshot.

Each DATA chunk is hashed (sha256 of its uncompressed bytes); only chunks the repository does
not hold yet are compressed and appended to a pack. ZERO/FILL/UNREAD/NOT_ACQUIRED runs store no
chunk. ``finalize`` publishes the packs and indexes first and the snapshot document last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import socket
import time
from typing import Any

from formats.extent import Extent, Kind
from imager.repo import snapshot as snapshots
from imager.repo.faults import crash_point
from imager.repo.pack import PackWriter
from imager.repo.store import Repository

log = logging.getLogger(__name__)
_ZEROS = bytes(1 << 20)


def _plain(value: Any) -> Any:
    """A JSON-ready form of a manifest or table object (to_dict, dataclass or dict)."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        log.warning("could not record %s in the snapshot", type(value).__name__)
        return None


class RepoSink:
    """A Sink (imager.image.base.Sink) writing one snapshot into ``repo``."""

    def __init__(self, repo: Repository, *, sector_size: int, sector_count: int,
                 identity: Any = None, table: Any = None, tags: list[str] | tuple[str, ...] = (),
                 command: str = "", chunk_sectors: int | None = None,
                 hash_image: bool = False) -> None:
        self.repo = repo
        self.sector_size, self.sector_count = sector_size, sector_count
        self.chunk_sectors = chunk_sectors or max(1, repo.chunk_size // sector_size)
        self.identity, self.table, self.tags, self.command = identity, table, list(tags), command
        self.writer = PackWriter(repo)
        self.ranges: list[dict[str, Any]] = []
        self.next_lba = 0
        self.started = time.time()
        self.stats = {"data_chunks": 0, "new_chunks": 0, "data_bytes": 0, "new_bytes": 0}
        self._sha = hashlib.sha256() if hash_image else None
        self.snapshot: dict[str, Any] | None = None

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store one chunk (DATA) or record a run of another kind, in LBA order."""
        self._gap(extent)
        if extent.kind is Kind.DATA:
            if data is None or len(data) != extent.count * self.sector_size:
                got = None if data is None else len(data)
                raise ValueError(f"DATA extent {extent.start_lba}+{extent.count} needs "
                                 f"{extent.count * self.sector_size} bytes, got {got}")
            self._data(extent, data)
        else:
            self._run(extent)
        crash_point("chunk")

    def skip(self, extent: Extent) -> None:
        """A run the pipeline did not read (same as ``write(extent, None)``)."""
        self.write(extent, None)

    def encode(self, extent: Extent, data: bytes | memoryview | None,
               check: str | None = None) -> bytes:
        """Hash and (if new) compress a DATA chunk in a worker thread; ``write_encoded`` stores it.

        Returns ``digest + flags byte + stored bytes`` (empty for other kinds; flags 0xFF and no
        payload when the repository already holds the chunk, so a repeat backup never compresses).
        ``check``: the pipeline's sha256 of ``data`` (backup runs it with that algorithm), reused
        as the chunk's address instead of hashing the chunk a second time.
        """
        if extent.kind is not Kind.DATA or data is None:
            return b""
        digest = bytes.fromhex(check) if check else hashlib.sha256(data).digest()
        if self.writer.holds(digest):
            return digest + b"\xff"
        flags, stored = self.writer.encode(data)
        return digest + bytes([flags]) + stored

    def write_encoded(self, extent: Extent, encoded: bytes) -> None:
        """Store a chunk ``encode`` prepared (in LBA order, like ``write``)."""
        if extent.kind is not Kind.DATA:
            self.write(extent, None)
            return
        self._gap(extent)
        digest, flags = encoded[:32], encoded[32]
        self.stats["data_chunks"] += 1
        self.stats["data_bytes"] += extent.count * self.sector_size
        if not self.writer.holds(digest):
            if flags == 0xFF:  # cannot happen: held chunks are never dropped mid-backup
                raise ValueError(f"chunk at LBA {extent.start_lba} was encoded as held but is not")
            self.stats["new_bytes"] += self.writer.add_stored(
                digest, extent.count * self.sector_size, encoded[33:], flags)
            self.stats["new_chunks"] += 1
        self._ref(extent, digest)
        crash_point("chunk")

    def _gap(self, extent: Extent) -> None:
        if extent.start_lba < self.next_lba:
            raise ValueError(f"extent at LBA {extent.start_lba} goes back before LBA {self.next_lba}")
        if extent.start_lba > self.next_lba:
            self._run(Extent(self.next_lba, extent.start_lba - self.next_lba, Kind.NOT_ACQUIRED))

    def _data(self, extent: Extent, data: bytes | memoryview) -> None:
        digest = hashlib.sha256(data).digest()
        self.stats["data_chunks"] += 1
        self.stats["data_bytes"] += len(data)
        if not self.writer.holds(digest):
            self.stats["new_bytes"] += self.writer.add(digest, data)
            self.stats["new_chunks"] += 1
        if self._sha is not None:
            self._sha.update(data)
        self._ref(extent, digest)

    def _ref(self, extent: Extent, digest: bytes) -> None:
        last = self.ranges[-1] if self.ranges else None
        if last is not None and last["kind"] == Kind.DATA.value:
            last["count"] += extent.count
            last["chunks"].append([extent.count, digest.hex()])
        else:
            self.ranges.append({"lba": extent.start_lba, "count": extent.count,
                                "kind": Kind.DATA.value, "chunks": [[extent.count, digest.hex()]]})
        self.next_lba = extent.end_lba

    def _run(self, extent: Extent) -> None:
        if self._sha is not None:
            self._hash_synthetic(extent)
        last = self.ranges[-1] if self.ranges else None
        if last is not None and last["kind"] == extent.kind.value and last.get("fill") == extent.fill:
            last["count"] += extent.count
        else:
            rng: dict[str, Any] = {"lba": extent.start_lba, "count": extent.count,
                                   "kind": extent.kind.value}
            if extent.fill is not None:
                rng["fill"] = extent.fill
            self.ranges.append(rng)
        self.next_lba = extent.end_lba

    def _hash_synthetic(self, extent: Extent) -> None:
        """Hash what a restore writes for this run (zeros, or the fill byte)."""
        remaining = extent.count * self.sector_size
        block = _ZEROS if extent.fill in (None, 0) else bytes([extent.fill]) * len(_ZEROS)
        while remaining:
            n = min(remaining, len(block))
            self._sha.update(memoryview(block)[:n])
            remaining -= n

    def checkpoint(self) -> dict[str, Any]:
        """Nothing to make durable mid-run (chunks count once their pack is published).

        ``chunks`` is how many chunks of the grid were written in full, as NativeSink says:
        the pipeline records exactly that many in the manifest.
        """
        return {"chunks": -(-self.next_lba // self.chunk_sectors), "next_lba": self.next_lba,
                **self.stats}

    def finalize(self, manifest: Any = None) -> None:
        """Publish the last pack and index, then the snapshot document (last, atomically)."""
        if self.next_lba < self.sector_count:
            self._run(Extent(self.next_lba, self.sector_count - self.next_lba, Kind.NOT_ACQUIRED))
        table_refs = self._store_table_sectors(manifest)
        self.writer.flush()
        self.stats["new_bytes"] = self.writer.bytes_written
        crash_point("before-snapshot")
        doc = self._document(manifest, table_refs)
        data = snapshots.publish(self.repo, doc)
        self.snapshot = doc
        log.info("snapshot %s published (%d bytes)", doc["id"], len(data))
        crash_point("snapshot-published")

    def abort(self) -> None:
        """Drop the unpublished pack after a failure; published packs stay for the next run."""
        self.writer.abort()

    def _store_table_sectors(self, manifest: Any) -> list[list[Any]]:
        """Store the manifest's raw table sectors as chunks; [lba, sectors, digest] each."""
        refs = []
        for lba, raw in getattr(manifest, "table_sectors", ()) or ():
            digest = hashlib.sha256(raw).digest()
            if not self.writer.holds(digest):
                self.writer.add(digest, raw)
            refs.append([lba, len(raw) // self.sector_size, digest.hex()])
        return refs

    def _document(self, manifest: Any, table_refs: list[list[Any]]) -> dict[str, Any]:
        """The snapshot: repository facts first, then what the manifest says about the device."""
        obj, from_ranges = snapshots.embed_manifest(
            manifest, [d for r in self.ranges if r["kind"] == Kind.DATA.value for _, d in r["chunks"]],
            table_refs)
        hashes = dict(getattr(manifest, "hashes", {}) or {})
        if self._sha is not None:
            hashes["sha256"] = self._sha.hexdigest()
        # the manifest carries the table when there is one; keep a copy only without one
        table = None if getattr(manifest, "table", None) else self.table
        source = getattr(manifest, "source", None) or self.identity
        return {
            "id": snapshots.new_snapshot_id(self.repo),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "time_unix": self.started, "duration_s": round(time.time() - self.started, 3),
            "host": socket.gethostname(), "command": self.command, "tags": self.tags,
            "source": _plain(source) or {}, "table": _plain(table),
            "sector_size": self.sector_size, "sector_count": self.sector_count,
            "chunk_sectors": self.chunk_sectors, "hashes": hashes, "stats": dict(self.stats),
            "ranges": self.ranges, "manifest": obj, "manifest_checks_from_ranges": from_ranges,
            "table_sectors": table_refs,
        }
