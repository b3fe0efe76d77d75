"""One acquisition from start (or resume) to finalized image: the glue around the pipeline.

Fresh run: journal created first (O_EXCL), then the image. Re-run with a journal present (or
``--resume``): same source (identity + a re-read of the last committed chunk) and same options
are required; the torn tail is cut, the committed chunks are re-read from the image to rebuild
the whole-image hashes (so they equal an uninterrupted run's), then the pipeline continues.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from formats.errors import FormatError
from formats.extent import Extent, Kind
from formats.manifest import Manifest
from imager import __version__
from imager.devices import open_source
from imager.devices.base import Identity
from imager.errors import BadInput, ReadError, UsageError
from imager.hashing import CHUNK_CHECK, MultiHash, chunk_digest
from imager.journal import Journal, JournalState, journal_path
from imager.pipeline import ChunkResult, Progress, Progressed, Writer, acquire, process, read_task
from imager.plan import Plan, build_plan
from imager.report import now_utc

log = logging.getLogger(__name__)
MiB = 1 << 20


@dataclass(frozen=True)
class AcquireRequest:
    """Everything ``imager acquire`` was asked to do."""

    source: str
    image: str
    image_format: str = "native"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ("sha256",)
    chunk_bytes: int = 4 * MiB
    level: int = 1                                   # measured: docs/BENCHMARKS.md
    case: dict[str, str] = field(default_factory=dict)
    resume: bool = False
    size: int | None = None
    sector_size: int | None = None
    retries: int = 1
    workers: int = 2
    command_line: tuple[str, ...] = ()
    segment_size: int | None = None                  # E01 only (e01 helper)
    write_protection: dict[str, Any] = field(default_factory=dict)   # imager.writeblock


def _open(req: AcquireRequest) -> Any:
    if req.source == "-":
        return open_source("-", sector_size=req.sector_size, size=req.size)
    if req.size is not None:
        raise UsageError("--size is only for reading from stdin ('-')")
    return open_source(req.source, sector_size=req.sector_size, direct=True)


def _read_table(source: Any) -> Any:
    if source.identity.kind == "stdin":
        return None  # a stream cannot seek to the backup GPT; the image can be parsed later
    try:
        from imager.table import read_table
    except ImportError:
        log.warning("partition table support not installed; acquiring without a table")
        return None
    try:
        return read_table(source)
    except FormatError as err:
        log.warning("no usable partition table: %s", err)
    except ReadError as err:  # a damaged table area must not stop the acquisition
        log.warning("partition table unreadable, acquiring the whole device: %s", err)
    return None


def _table_record(source: Any, table: Any) -> tuple[dict[str, Any], tuple[tuple[int, bytes], ...]]:
    if table is None:
        return {}, ()
    raw = tuple((e.start_lba, source.read(e.start_lba, e.count))
                for e in getattr(table, "metadata_extents", ()))
    return table.to_dict(), raw


def _options(req: AcquireRequest, plan: Plan) -> dict[str, Any]:
    return {"format": req.image_format, "hashes": list(req.hashes), "level": req.level,
            "chunk_check": CHUNK_CHECK, "retries": req.retries, "case": dict(req.case),
            "plan": plan.to_dict()}


def _make_e01_sink(req: AcquireRequest, source: Any, plan: Plan, offset: int | None) -> Any:
    from imager.image.ewf_writer import EwfSink

    kw: dict[str, Any] = {"sector_size": source.sector_size,
                          "sector_count": source.sector_count,
                          "chunk_sectors": plan.chunk_sectors}
    if req.segment_size:
        kw["segment_size"] = req.segment_size
    if offset is not None:
        return EwfSink.reopen(req.image, offset, **kw)
    return EwfSink(req.image, case=req.case, identity=source.identity, **kw)


def _make_sink(req: AcquireRequest, source: Any, plan: Plan, offset: int | None) -> Any:
    if req.image_format == "e01":
        return _make_e01_sink(req, source, plan, offset)
    kw = {"sector_size": source.sector_size, "sector_count": source.sector_count,
          "chunk_sectors": plan.chunk_sectors}
    if req.image_format == "native":
        from imager.image.native import NativeSink as cls
        kw["level"] = req.level
    elif req.image_format == "raw":
        from imager.image.raw import RawSink as cls  # type: ignore[assignment]
    elif req.image_format == "simg":
        from imager.image.sparse_writer import SparseSink as cls  # type: ignore[assignment]
    else:
        raise UsageError(f"--format {req.image_format!r}: choose native or raw")
    if offset is None:
        return cls(req.image, **kw)
    return cls.reopen(req.image, offset, **kw)


def _plan(req: AcquireRequest, source: Any, table: Any) -> Plan:
    ss = source.sector_size
    if req.chunk_bytes % ss or not ss <= req.chunk_bytes <= 1 << 30:
        raise UsageError(f"--chunk-size {req.chunk_bytes}: must be a multiple of the "
                         f"{ss}-byte sector, at most 1 GiB")
    return build_plan(source.sector_count, ss, req.chunk_bytes // ss, table,
                      req.include, req.exclude)


def run_acquire(req: AcquireRequest, progress: Progress | None = None,
                source: Any = None) -> Manifest:
    """Acquire ``req.source`` into ``req.image`` (resuming an interrupted run) and finalize.

    Returns the manifest written into the image. ``source``: an already open Source to use
    instead of opening ``req.source`` (the caller keeps it open; e.g. one LUN of a phone).

    Raises:
        UsageError: image exists, nothing to resume, other source or changed options.
        Interrupted: Ctrl-C (resumable). DeviceError and others propagate (resumable too).
    """
    owned = source is None
    source = _open(req) if owned else source
    try:
        table = _read_table(source)
        plan = _plan(req, source, table)
        opts = _options(req, plan)
        journal, writer, started = _prepare(req, source, plan, opts)
        try:
            acquire(source, writer.sink, plan, progress=progress, writer=writer,
                    workers=req.workers, retries=req.retries, check_algo=CHUNK_CHECK)
            manifest = _manifest(req, source, table, plan, writer, started)
            writer.sink.finalize(manifest)
        finally:
            if journal is not None:
                journal.close()
        if journal is not None:
            os.unlink(journal.path)
        return manifest
    finally:
        if owned:
            source.close()


def _prepare(req: AcquireRequest, source: Any, plan: Plan, opts: dict[str, Any]
             ) -> tuple[Journal | None, Writer, str]:
    jpath = journal_path(req.image)
    resumable = source.identity.kind != "stdin"
    if os.path.exists(jpath):
        if not resumable:
            raise UsageError(f"{jpath} exists, but reading from stdin cannot resume: delete "
                             f"{req.image} and {jpath} and start again")
        return _resume(req, source, plan, opts, jpath)
    if req.resume:
        raise UsageError(f"--resume: no interrupted acquisition of {req.image} ({jpath} missing)")
    if os.path.exists(req.image):
        raise UsageError(f"{req.image} already exists; choose another name or delete it")
    started = now_utc()
    journal = None
    if resumable:  # journal first: a crash right after it still resumes (from chunk 0)
        journal = Journal.create(jpath, {"identity": source.identity.to_dict(), "options": opts,
                                         "started": started, "image": req.image})
    try:
        sink = _make_sink(req, source, plan, None)
    except BaseException:
        if journal is not None:  # a refused sink (bad option) leaves nothing behind
            journal.close()
            os.unlink(jpath)
        raise
    return journal, Writer(sink, MultiHash(req.hashes), Progressed(), journal), started


def _check_same(header: dict[str, Any], source: Any, opts: dict[str, Any], jpath: str) -> None:
    try:
        before = Identity.from_dict(header["identity"])
    except (KeyError, TypeError) as err:
        raise BadInput(f"{jpath}: journal header has no usable source identity") from err
    if not before.same_device(source.identity):
        raise UsageError(f"{jpath}: this image was started from another source "
                         f"({before.path}, {before.size_bytes} bytes, serial {before.serial!r}"
                         f"); now {source.identity.path}, {source.identity.size_bytes} bytes, "
                         f"serial {source.identity.serial!r}")
    old = header.get("options", {})
    changed = sorted(k for k in set(old) | set(opts) if old.get(k) != opts.get(k))
    if changed:
        detail = "; ".join(f"{k}: was {old.get(k)!r}, now {opts.get(k)!r}" for k in changed)
        raise UsageError(f"{jpath}: options differ from the interrupted run ({detail}); "
                         "re-run with the same options or start a new image")


def _restore_progress(state: JournalState, plan: Plan) -> tuple[Progressed, list[list[Any]]]:
    done, records = Progressed(), []
    from formats.manifest import runs_append

    for batch in state.batches:
        for kind, fill, check in batch["chunks"]:
            index = len(records)
            records.append([kind, fill, check])
            runs_append(done.runs, index, Kind(kind), fill)
            if check is not None:
                done.checks.append(check)
        done.unread += [Extent(s, c, Kind.UNREAD) for s, c in batch.get("unread", [])]
    done.next_index = len(records)
    done.seconds = float(state.committed.get("t", 0.0)) if state.committed else 0.0
    if state.committed and state.committed["n"] != done.next_index:
        raise BadInput(f"journal: {done.next_index} chunk records, last batch says "
                       f"{state.committed['n']}")
    return done, records


def _resume(req: AcquireRequest, source: Any, plan: Plan, opts: dict[str, Any], jpath: str
            ) -> tuple[Journal, Writer, str]:
    journal, state = Journal.load(jpath)
    try:
        _check_same(state.header, source, opts, jpath)
        done, records = _restore_progress(state, plan)
        sink_state = state.committed["sink"] if state.committed else {"offset": 0}
        if "offset" not in sink_state:  # e.g. Android sparse: headers are only written at the end
            raise UsageError(f"a {req.image_format} acquisition cannot resume: delete "
                             f"{req.image} and {jpath} and start again")
        offset = sink_state["offset"]
        if not os.path.exists(req.image):
            if offset:
                raise BadInput(f"{req.image} is missing but {jpath} says {offset} bytes are "
                               "committed")
            sink = _make_sink(req, source, plan, None)
        else:
            sink = _make_sink(req, source, plan, offset)
        hasher = MultiHash(req.hashes)
        _replay(sink, records, hasher, jpath)
        if records:
            _revalidate(source, plan, records, req.retries, jpath)
    except BaseException:
        journal.close()
        raise
    log.info("resuming %s at chunk %d of %d", req.image, done.next_index, plan.chunk_count)
    return journal, Writer(sink, hasher, done, journal), state.header.get("started", now_utc())


def _replay(sink: Any, records: list[list[Any]], hasher: MultiHash, jpath: str) -> None:
    count = 0
    for index, data in enumerate(sink.replay()):
        if index >= len(records):
            raise BadInput(f"{sink.path} holds more committed chunks than {jpath} records")
        _kind, _fill, check = records[index]
        if check is not None and chunk_digest(CHUNK_CHECK, data) != check:
            raise BadInput(f"{sink.path}: committed chunk {index} does not match its journal "
                           "check value; the image is damaged, start a new one")
        hasher.update(data)
        count += 1
    if count != len(records):
        raise BadInput(f"{sink.path}: {count} committed chunks found, {jpath} records "
                       f"{len(records)}")


def _revalidate(source: Any, plan: Plan, records: list[list[Any]], retries: int,
                jpath: str) -> None:
    index = len(records) - 1
    kind, fill, check = records[index]
    if kind in (Kind.UNREAD.value, Kind.NOT_ACQUIRED.value):
        return
    task = plan.task(index)
    data, unread = read_task(source, task, retries)
    if unread:
        return  # the area now fails to read: nothing to compare
    again = process(task, data, unread, CHUNK_CHECK, None)
    if [again.kind.value, again.fill, again.check] != [kind, fill, check]:
        raise UsageError(f"{jpath}: the source's chunk {index} (LBA {task.extent.start_lba}+"
                         f"{task.extent.count}) reads differently than when it was acquired: "
                         "another device or changed content; start a new image")


def build_manifest(source: Any, table: Any, plan: Plan, writer: Writer, started: str, *,
                   case: dict[str, str], options: dict[str, Any], command_line: tuple[str, ...],
                   image_format: str) -> Manifest:
    """The manifest of a finished pipeline run (shared by acquire and the snapshot backup)."""
    done = writer.done
    table_dict, table_raw = _table_record(source, table)
    return Manifest(
        sector_size=source.sector_size, sector_count=source.sector_count,
        chunk_sectors=plan.chunk_sectors, chunk_runs=tuple(done.runs),
        chunk_checks=tuple(done.checks), chunk_check=CHUNK_CHECK,
        hashes=writer.hasher.hexdigests(), source=source.identity.to_dict(),
        table=table_dict, table_sectors=table_raw,
        unread=tuple((u.start_lba, u.count) for u in done.unread),
        not_acquired=tuple(plan.not_acquired()), case=case, options=options,
        timings={"acquire_seconds": round(done.seconds, 3)}, started=started,
        finished=now_utc(), command_line=command_line, tool_version=__version__,
        image_format=image_format)


def _manifest(req: AcquireRequest, source: Any, table: Any, plan: Plan, writer: Writer,
              started: str) -> Manifest:
    options = ({k: v for k, v in _options(req, plan).items() if k != "plan"}
               | {"partitions": list(req.include), "exclude": list(req.exclude)}
               | {"write_protection": dict(req.write_protection), "host": _host()})
    return build_manifest(source, table, plan, writer, started, case=dict(req.case),
                          options=options, command_line=req.command_line,
                          image_format=req.image_format)


def _host() -> dict[str, str]:
    from imager.report import host_info

    return host_info()


__all__ = ["AcquireRequest", "ChunkResult", "run_acquire"]
