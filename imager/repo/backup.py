"""One backup: the acquire pipeline reading a device into a RepoSink, then the snapshot.

The same plan (chunk grid, ``--partition``/``--exclude``), reader pool, classification and
manifest as ``imager acquire``; only the sink differs. The chunk grid is the repository's
chunk size (fixed when the repository is created), so chunks of every backup line up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from formats.errors import FormatError
from formats.manifest import Manifest
from imager.acquisition import build_manifest
from imager.devices import open_source
from imager.errors import Interrupted, UsageError
from imager.hashing import MultiHash
from imager.pipeline import Progress, Progressed, Writer, acquire
from imager.plan import Plan, build_plan
from imager.repo.lock import locked
from imager.repo.sink import RepoSink
from imager.repo.store import Repository
from imager.report import now_utc

log = logging.getLogger(__name__)
CHUNK_CHECK = "sha256"   # equal to the repository digest, so the manifest's checks are the refs
DEFAULT_CHUNK_BYTES = 4 << 20  # imager acquire's default chunk size (imager.acquisition)


@dataclass(frozen=True)
class BackupRequest:
    """Everything ``imager backup`` was asked to do."""

    source: str
    repo: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    chunk_bytes: int | None = None      # only used when the repository is created
    sector_size: int | None = None
    hashes: tuple[str, ...] = ("sha256",)
    workers: int = 2
    retries: int = 1
    break_lock: bool = False
    command_line: tuple[str, ...] = ()


def _read_table(source: Any) -> Any:
    if source.identity.kind == "stdin":
        return None
    try:
        from imager.table import read_table
    except ImportError:
        log.warning("partition table support not installed; backing up without a table")
        return None
    try:
        return read_table(source)
    except FormatError as err:
        log.warning("no usable partition table: %s", err)
        return None


def open_repository(req: BackupRequest) -> Repository:
    """Open ``req.repo``, creating it (with ``req.chunk_bytes``) on first use."""
    repo = Repository.open_or_init(req.repo, chunk_size=req.chunk_bytes or DEFAULT_CHUNK_BYTES)
    if req.chunk_bytes and req.chunk_bytes != repo.chunk_size:
        raise UsageError(f"{req.repo}: the repository's chunk size is {repo.chunk_size} bytes "
                         f"(fixed when it was created), not {req.chunk_bytes}")
    return repo


def run_backup(req: BackupRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Back ``req.source`` up into ``req.repo``; returns the published snapshot document.

    Raises:
        RepositoryLocked: another process holds the repository.
        Interrupted: Ctrl-C; chunks stored so far are kept and a re-run does not store them again.
        UsageError, DeviceError and others propagate; no snapshot is published then.
    """
    source = open_source(req.source, sector_size=req.sector_size)
    try:
        repo = open_repository(req)
        if repo.chunk_size % source.sector_size:
            raise UsageError(f"{req.repo}: chunk size {repo.chunk_size} is not a multiple of "
                             f"the source's {source.sector_size}-byte sectors")
        with locked(repo.path, " ".join(req.command_line) or "imager backup", req.break_lock):
            repo.reload_index()  # what other writers published before we took the lock
            return _backup_locked(req, repo, source, progress)
    finally:
        source.close()


def _backup_locked(req: BackupRequest, repo: Repository, source: Any,
                   progress: Progress | None) -> dict[str, Any]:
    table = _read_table(source)
    ss = source.sector_size
    plan = build_plan(source.sector_count, ss, repo.chunk_size // ss, table, req.include,
                      req.exclude)
    sink = RepoSink(repo, sector_size=ss, sector_count=source.sector_count,
                    identity=source.identity, table=table, tags=req.tags,
                    command=" ".join(req.command_line), chunk_sectors=plan.chunk_sectors)
    writer = Writer(sink, MultiHash(req.hashes), Progressed(), None)
    started = now_utc()
    try:
        acquire(source, sink, plan, progress=progress, writer=writer, workers=req.workers,
                retries=req.retries, check_algo=CHUNK_CHECK)
    except Interrupted as err:
        sink.writer.flush()  # keep what was read: the next backup will not store it again
        raise Interrupted(f"backup {err}; no snapshot was made",
                          "run the same backup again (chunks already stored are reused)") from err
    except BaseException:
        sink.abort()
        raise
    sink.finalize(_manifest(req, source, table, plan, writer, started))
    assert sink.snapshot is not None
    return sink.snapshot


def _manifest(req: BackupRequest, source: Any, table: Any, plan: Plan, writer: Writer,
              started: str) -> Manifest:
    options = {"format": "snapshot", "hashes": list(req.hashes), "chunk_check": CHUNK_CHECK,
               "partitions": list(req.include), "exclude": list(req.exclude),
               "tags": list(req.tags)}
    return build_manifest(source, table, plan, writer, started, case={}, options=options,
                          command_line=req.command_line, image_format="snapshot")
