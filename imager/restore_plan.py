"""What a restore will do: which image sectors go to which target sectors, and what is left out.

A plan is a list of steps, each a slice of one image chunk and the target LBA it goes to. A
whole-device plan maps every chunk to the same LBAs (minus identity partitions of another phone);
a partition plan maps each named partition of the image into the target's partition of the same
name. Whether a step is written, zeroed fast or skipped depends on its kind and the zeros mode.
"""

from __future__ import annotations

import bisect
import dataclasses
import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

from formats.extent import Kind
from imager.devices.base import Identity
from imager.errors import BadInput, TargetRefused, UsageError
from imager.image.base import Chunk
from imager.migrate import MigrateSpec, plan_migration

log = logging.getLogger(__name__)

ZEROS_MODES = ("write", "discard", "skip")

# Partitions that hold what makes a phone *that* phone (IMEI, calibration, DRM/attestation keys,
# modem NV items). Copying another phone's breaks or clones the target's identity.
IDENTITY_PATTERNS = ("persist", "persistbak", "modemst1", "modemst2", "fsg", "fsc", "efs",
                     "efs_backup", "nvdata", "nvram", "nvcfg", "proinfo", "protect*", "dpp",
                     "sec", "mdm1m9kefs*", "imei*")


def is_identity_partition(name: str) -> bool:
    """True for phone identity partitions (case-insensitive, A/B slot suffix ignored)."""
    low = name.lower()
    for suffix in ("_a", "_b"):
        low = low.removesuffix(suffix)
    return any(fnmatch.fnmatchcase(low, pat) for pat in IDENTITY_PATTERNS)


@dataclass(frozen=True)
class Step:
    """``count`` sectors from ``offset`` sectors into ``chunk``, written at ``target_lba``."""

    chunk: Chunk
    offset: int
    count: int
    target_lba: int
    hole: Kind | None = None  # UNREAD / NOT_ACQUIRED sectors inside a chunk of another kind

    @property
    def kind(self) -> Kind:
        return self.hole or self.chunk.extent.kind

    @property
    def image_lba(self) -> int:
        return self.chunk.extent.start_lba + self.offset


@dataclass(frozen=True)
class TargetShape:
    """What planning needs to know of a target (lets --dry-run plan a file not yet created)."""

    sector_size: int
    sector_count: int
    identity: Identity


@dataclass(frozen=True)
class RestorePlan:
    """Every step of a restore, in target-LBA order, and why anything is left out."""

    steps: tuple[Step, ...]
    sector_size: int
    image_sector_count: int
    target_sector_count: int
    write_unread: bool = False
    partitions: tuple[str, ...] = ()
    skipped_identity: tuple[str, ...] = ()
    migrate: MigrateSpec | None = None
    notes: tuple[str, ...] = field(default=())

    def action(self, step: Step, zeros: str) -> str:
        """``write``, ``zero`` (fast zeroing) or ``skip`` for ``step`` under ``zeros``."""
        if step.kind in (Kind.DATA, Kind.FILL):
            return "write"
        if step.kind is Kind.ZERO:
            return {"write": "write", "discard": "zero", "skip": "skip"}[zeros]
        return "write" if self.write_unread else "skip"


def build_plan(reader: Any, target: Any, *, partitions: tuple[str, ...] = (),
               include_identity: bool = False, grow_last: bool = False,
               write_unread: bool = False, source_identity: Identity | None = None,
               image_table: Any = None, target_table: Any = None) -> RestorePlan:
    """Plan restoring ``reader`` onto ``target`` (a Target or a TargetShape).

    Args:
        partitions: names to restore partition-by-partition; empty = the whole device.
        include_identity: also write identity partitions onto a different phone.
        source_identity: the identity of the device the image was taken from (default: what
            the image records, see image_source_identity).
        image_table, target_table: parsed tables (read here when needed and not given).
    Raises:
        TargetRefused: sizes or sector sizes do not fit.
        UsageError, BadInput: a named partition is missing, or the image has no table.
    """
    if target.sector_size != reader.sector_size:
        raise TargetRefused(f"{target.identity.path}: logical sector size "
                            f"{target.sector_size}, the image has {reader.sector_size}")
    chunks = list(reader.chunks())
    if partitions:
        if grow_last:
            raise UsageError("--grow-last applies to whole-device restores, not --partition")
        image_table = image_table or _read_image_table(reader)
        target_table = target_table or _read_target_table(target)
        return _reader_notes(reader, _partition_plan(
            reader, target, chunks, partitions, image_table, target_table, write_unread))
    return _reader_notes(reader, _whole_plan(
        reader, target, chunks, include_identity=include_identity, grow_last=grow_last,
        write_unread=write_unread, source_identity=source_identity or image_source_identity(reader),
        image_table=image_table))


def _reader_notes(reader: Any, plan: RestorePlan) -> RestorePlan:
    """Add what the image format says about the plan (e.g. sparse DONT_CARE = left as is)."""
    extra = tuple(getattr(reader, "plan_notes", ()) or ())
    return dataclasses.replace(plan, notes=plan.notes + extra) if extra else plan


def _whole_plan(reader: Any, target: Any, chunks: list[Chunk], *, include_identity: bool,
                grow_last: bool, write_unread: bool, source_identity: Identity | None,
                image_table: Any) -> RestorePlan:
    if target.sector_count < reader.sector_count:
        raise TargetRefused(
            f"{target.identity.path}: target has {target.sector_count} sectors "
            f"({target.sector_count * target.sector_size} bytes), the image needs "
            f"{reader.sector_count} ({reader.sector_count * reader.sector_size} bytes)")
    notes: list[str] = []
    if image_table is None:
        image_table = _read_image_table(reader, required=False)
    skipped = _identity_to_skip(target, image_table, include_identity, source_identity, notes)
    exclude = [(p.first_lba, p.last_lba + 1) for p in skipped]
    steps: list[Step] = []
    for chunk in chunks:
        whole = Step(chunk, 0, chunk.extent.count, chunk.extent.start_lba)
        steps.extend(_cut(whole, exclude))
    steps = _mark_holes(steps, _holes(reader))
    migrate = plan_migration(reader, target.sector_count, image_table, grow_last,
                             notes)
    return RestorePlan(tuple(steps), reader.sector_size, reader.sector_count,
                       target.sector_count, write_unread, (), tuple(p.name for p in skipped),
                       migrate, tuple(notes))


def _identity_to_skip(target: Any, table: Any, include: bool, source: Identity | None,
                      notes: list[str]) -> list[Any]:
    """The image's identity partitions to leave out (and refuse if the target's would move)."""
    found = [p for p in getattr(table, "partitions", ()) if is_identity_partition(p.name)]
    names = ", ".join(p.name for p in found)
    if include or target.identity.kind == "file" or (
            source is not None and same_phone(source, target.identity)):
        why = ("--include-identity" if include else "the target is an image file"
               if target.identity.kind == "file" else "the target is the image's source")
        if found:
            notes.append(f"identity partitions written ({why}): {names}")
        return []
    _check_target_identity(target, found)
    if found:
        why = "unknown" if source is None else "not proven to be this device"
        notes.append(f"identity partitions skipped (image source is {why}; "
                     f"--include-identity writes them): {names}")
    return found


def _check_target_identity(target: Any, skipped: list[Any]) -> None:
    """Refuse when the target's own identity partitions are not where the skipped ones are.

    Skipping the image's identity ranges only protects the target's when both tables put
    them at the same LBAs (same model); otherwise the image's layout would overwrite them.
    """
    if not hasattr(target, "read"):
        return  # a TargetShape: nothing on it yet
    table = _read_table(target, f"target {target.identity.path}", False)
    kept = {(p.name, p.first_lba, p.last_lba) for p in skipped}
    for part in getattr(table, "partitions", ()):
        if is_identity_partition(part.name) and \
                (part.name, part.first_lba, part.last_lba) not in kept:
            raise TargetRefused(
                f"{target.identity.path}: the target's identity partition {part.name!r} (LBA "
                f"{part.first_lba}..{part.last_lba}) would be overwritten: the image has no "
                f"such partition there. Restore --partition by partition, or pass "
                f"--include-identity to overwrite it")


def same_phone(source: Identity, target: Identity) -> bool:
    """Same device, proven by a serial or disk GUID both sides report (empty proves nothing)."""
    if not source.same_device(target):
        return False
    return any(getattr(source, f) and getattr(source, f) == getattr(target, f)
               for f in ("serial", "disk_guid"))


def _holes(reader: Any) -> list[tuple[int, int, Kind]]:
    """Sector-precise UNREAD / NOT_ACQUIRED ranges [start, end) of the image, sorted.

    A chunk's kind says what most of it is; the image's sector map (``extents()``, when the
    reader has one) also knows the unread sectors inside DATA or ZERO chunks, which a restore
    must not overwrite with the zeros that stand in for them.
    """
    extents = getattr(reader, "extents", None)
    if extents is None:
        return []
    return [(e.start_lba, e.end_lba, e.kind) for e in extents()
            if e.kind in (Kind.UNREAD, Kind.NOT_ACQUIRED)]


def _mark_holes(steps: list[Step], holes: list[tuple[int, int, Kind]]) -> list[Step]:
    """Split steps at hole boundaries; the pieces inside a hole carry its kind."""
    if not holes:
        return steps
    starts = [h[0] for h in holes]
    out = []
    for step in steps:
        lo, hi = step.image_lba, step.image_lba + step.count
        i = max(bisect.bisect_right(starts, lo) - 1, 0)
        pos = lo
        while pos < hi:
            while i < len(holes) and holes[i][1] <= pos:
                i += 1
            inside = i < len(holes) and holes[i][0] <= pos
            end = min(hi, holes[i][1] if inside else holes[i][0] if i < len(holes) else hi)
            kind = holes[i][2] if inside and step.chunk.extent.kind.was_read else None
            out.append(Step(step.chunk, step.offset + pos - lo, end - pos,
                            step.target_lba + pos - lo, kind))
            pos = end
    return out


def _cut(step: Step, exclude: list[tuple[int, int]]) -> list[Step]:
    """``step`` minus the excluded [start, end) LBA ranges (whole-device steps only)."""
    pieces = [(step.image_lba, step.image_lba + step.count)]
    for lo, hi in exclude:
        nxt = []
        for a, b in pieces:
            if hi <= a or lo >= b:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo))
            if hi < b:
                nxt.append((hi, b))
        pieces = nxt
    base = step.chunk.extent.start_lba
    return [Step(step.chunk, a - base, b - a, a) for a, b in pieces]


def _partition_plan(reader: Any, target: Any, chunks: list[Chunk], names: tuple[str, ...],
                    image_table: Any, target_table: Any, write_unread: bool) -> RestorePlan:
    steps: list[Step] = []
    notes = []
    for name in dict.fromkeys(names):
        src = _find(image_table, name, "image")
        dst = _find(target_table, name, f"target {target.identity.path}")
        if src.count_sectors > dst.count_sectors:
            raise TargetRefused(
                f"partition {name!r}: the image's has {src.count_sectors} sectors, the "
                f"target's only {dst.count_sectors}")
        if src.count_sectors < dst.count_sectors:
            notes.append(f"partition {name!r}: target is {dst.count_sectors - src.count_sectors}"
                         f" sectors larger; its tail is left as it is")
        steps.extend(_partition_steps(chunks, src.first_lba, src.last_lba + 1, dst.first_lba))
    steps = _mark_holes(sorted(steps, key=lambda s: s.target_lba), _holes(reader))
    return RestorePlan(tuple(steps), reader.sector_size, reader.sector_count,
                       target.sector_count, write_unread, tuple(dict.fromkeys(names)), (),
                       None, tuple(notes))


def _partition_steps(chunks: list[Chunk], start: int, end: int, dest: int) -> list[Step]:
    out = []
    for chunk in chunks:
        lo = max(start, chunk.extent.start_lba)
        hi = min(end, chunk.extent.end_lba)
        if lo < hi:
            out.append(Step(chunk, lo - chunk.extent.start_lba, hi - lo, dest + lo - start))
    return out


def _find(table: Any, name: str, where: str) -> Any:
    matches = [p for p in table.partitions if p.name == name]
    if not matches:
        have = ", ".join(p.name for p in table.partitions) or "none"
        raise UsageError(f"no partition named {name!r} in the {where} (it has: {have})")
    if len(matches) > 1:
        raise BadInput(f"{len(matches)} partitions named {name!r} in the {where}")
    return matches[0]


def _read_image_table(reader: Any, required: bool = True) -> Any:
    from imager.image.source import ImageAsSource

    return _read_table(ImageAsSource(reader, getattr(reader, "path", "")), "image", required)


def _read_target_table(target: Any) -> Any:
    return _read_table(target, f"target {target.identity.path}", True)


def _read_table(source: Any, where: str, required: bool) -> Any:
    """The partition table of ``source``; ``None`` when optional and unreadable."""
    from formats.errors import FormatError

    try:
        from imager.table import read_table
    except ImportError as err:
        if required:
            raise UsageError(f"partition tables cannot be read yet ({err})") from err
        log.warning("partition table support missing (%s); planning without a table", err)
        return None
    try:
        table = read_table(source)
    except FormatError as err:
        if required:
            raise BadInput(f"{where}: no usable partition table: {err}") from err
        log.warning("%s: no usable partition table: %s", where, err)
        return None
    if required and getattr(table, "kind", "none") == "none":
        raise BadInput(f"{where}: no partition table (needed for --partition)")
    return table


def image_source_identity(reader: Any) -> Identity | None:
    """The identity of the device the image was taken from, when the image records one."""
    source = getattr(reader, "source_identity", None)
    if source is None:
        source = getattr(getattr(reader, "manifest", None), "source", None)
    if isinstance(source, Identity):
        return source
    if isinstance(source, dict) and source.get("size_bytes"):
        names = {f.name for f in dataclasses.fields(Identity)}
        try:
            return Identity(**{k: v for k, v in source.items() if k in names})
        except TypeError:
            return None
    return None


def summarize(plan: RestorePlan, zeros: str) -> dict[str, Any]:
    """The plan as --dry-run shows it: merged ranges and byte totals per action."""
    ss = plan.sector_size
    ranges: list[dict[str, Any]] = []
    totals = {"write": 0, "zero": 0, "skip": 0}
    for step in plan.steps:
        action = plan.action(step, zeros)
        totals[action] += step.count * ss
        last = ranges[-1] if ranges else None
        if last and last["action"] == action and last["kind"] == step.kind.value \
                and last["target_lba"] + last["count"] == step.target_lba \
                and last["image_lba"] + last["count"] == step.image_lba:
            last["count"] += step.count
        else:
            ranges.append({"action": action, "kind": step.kind.value, "count": step.count,
                           "target_lba": step.target_lba, "image_lba": step.image_lba})
    return {"ranges": ranges, "bytes_to_write": totals["write"],
            "bytes_to_zero": totals["zero"], "bytes_skipped": totals["skip"],
            "zeros": zeros, "partitions": list(plan.partitions),
            "skipped_identity": list(plan.skipped_identity),
            "migrate": dataclasses.asdict(plan.migrate) if plan.migrate else None,
            "notes": list(plan.notes)}
