"""Whole-phone acquisition over EDL: every LUN its own image, plus one set manifest.

``acquire_phone`` opens one EDL session (the programmer is uploaded once), then acquires each
LUN with the ordinary pipeline (``run_acquire`` with the LUN as its Source), so each LUN image is
a normal, verifiable, resumable native (or raw) image. LUNs without a partition table are
captured whole. ``--lun`` narrows to some LUNs; ``--partition`` to the LUNs whose table holds a
matching partition (and within them to those partitions, tables always included).

The set manifest (``PREFIX.imgset.json``, or ``DIR/phone.imgset.json`` for a directory) lists
every LUN the phone reported: its image (a path relative to the manifest), identity, geometry,
content hashes, the image file's sha256, the unread sectors, and a status: ``complete``,
``partial`` (some sectors unread or not selected), ``failed`` (with the error) or ``skipped``
(not asked for). It is canonical JSON whose ``checksum`` is the sha256 of the rest.
Re-running the same command resumes: finished LUN images are kept (checked against the
phone's identity), an interrupted one resumes from its journal.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from formats.errors import ChecksumMismatch, FormatError
from imager import __version__
from imager.devices.base import Identity
from imager.durable import write_atomic
from imager.errors import BadInput, DeviceError, DeviceGone, UsageError
from imager.hashing import file_sha256
from imager.report import now_utc

log = logging.getLogger(__name__)

SET_FORMAT = "imager-phone-set"
SET_VERSION = "1.0"
SET_SUFFIX = ".imgset.json"
Progress = Callable[[int, int, str], None]


def set_paths(out: str, image_format: str = "native") -> tuple[str, Callable[[int], str]]:
    """(set manifest path, LUN number -> image path) for a directory or a prefix."""
    ext = ".imgz" if image_format == "native" else ".img"
    if out.endswith(os.sep) or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, "phone" + SET_SUFFIX), \
            lambda n: os.path.join(out, f"lun{n}{ext}")
    return out + SET_SUFFIX, lambda n: f"{out}.lun{n}{ext}"


@dataclass
class LunEntry:
    """One LUN of the set."""

    lun: int
    status: str                       # complete | partial | failed | skipped
    image: str = ""                   # relative to the set manifest's directory
    sector_size: int = 0
    sector_count: int = 0
    identity: dict[str, Any] = field(default_factory=dict)
    table: str = ""                   # gpt | mbr | none
    hashes: dict[str, str] = field(default_factory=dict)
    image_sha256: str = ""
    unread: list[list[int]] = field(default_factory=list)
    not_acquired_sectors: int = 0
    reason: str = ""
    gone: bool = field(default=False, repr=False, compare=False)   # not stored


    @property
    def size_bytes(self) -> int:
        return self.sector_size * self.sector_count


@dataclass
class PhoneSet:
    """The set manifest."""

    device: dict[str, Any]
    luns: list[LunEntry]
    started: str = ""
    finished: str = ""
    command_line: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def complete(self) -> bool:
        return all(e.status in ("complete", "skipped") for e in self.luns)

    def not_captured(self) -> list[str]:
        """Human lines for everything that could not be captured (empty when all was)."""
        lines = []
        for e in self.luns:
            if e.status == "failed":
                lines.append(f"LUN {e.lun}: NOT CAPTURED: {e.reason}")
            elif e.unread:
                n = sum(c for _, c in e.unread)
                where = ", ".join(f"{s}+{c}" for s, c in e.unread[:8])
                lines.append(f"LUN {e.lun}: {n} sector(s) could not be read (LBA {where})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        luns = []
        for e in self.luns:
            d = dataclasses.asdict(e)
            d.pop("gone")
            d["size_bytes"] = e.size_bytes
            luns.append(d)
        return {"format": SET_FORMAT, "version": SET_VERSION, "tool_version": __version__,
                "device": self.device, "luns": luns, "complete": self.complete,
                "not_captured": self.not_captured(), "started": self.started,
                "finished": self.finished, "command_line": list(self.command_line)}

    def to_json(self) -> bytes:
        obj = self.to_dict()
        obj["checksum"] = _digest(obj)
        return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()

    def image_path(self, entry: LunEntry) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), entry.image)


def _digest(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def is_phone_set(path: str) -> bool:
    """True when ``path`` is a set manifest (by content, not by name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and SET_FORMAT.encode() in head


def load_set(path: str) -> PhoneSet:
    """Parse and verify a set manifest.

    Raises:
        BadInput: not JSON or not a set. ChecksumMismatch: edited or damaged.
    """
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise BadInput(f"{path}: not a readable set manifest: {err}") from err
    if not isinstance(obj, dict) or obj.get("format") != SET_FORMAT:
        raise BadInput(f"{path}: not an {SET_FORMAT} manifest")
    if str(obj.get("version", "")).split(".")[0] != SET_VERSION.split(".")[0]:
        raise BadInput(f"{path}: set version {obj.get('version')!r}, this imager reads "
                       f"{SET_VERSION}")
    actual = _digest(obj)
    if obj.get("checksum") != actual:
        raise ChecksumMismatch(f"set manifest {path}", expected=str(obj.get("checksum")),
                               actual=actual)
    names = {f.name for f in dataclasses.fields(LunEntry)} - {"gone"}
    try:
        luns = [LunEntry(**{k: v for k, v in e.items() if k in names}) for e in obj["luns"]]
    except (KeyError, TypeError) as err:
        raise BadInput(f"{path}: malformed LUN list: {err}") from err
    return PhoneSet(obj.get("device", {}), luns, obj.get("started", ""),
                    obj.get("finished", ""), obj.get("command_line", []), path)


def _table_kind(source: Any) -> tuple[str, list[str]]:
    """(table kind, partition names) of a LUN; "none" when there is no usable table."""
    from imager.table import read_table

    try:
        table = read_table(source)
    except FormatError as err:
        log.warning("%s: no usable partition table: %s", source.identity.path, err)
        return "none", []
    return table.kind, [p.name for p in table.partitions]


def _patterns_here(include: tuple[str, ...], names: list[str]) -> tuple[str, ...]:
    return tuple(p for p in include if any(fnmatch.fnmatchcase(n, p) for n in names))


def acquire_phone(spec_rest: str, out: str, template: Any, *, loader: str,
                  luns: tuple[int, ...] = (), progress: Progress | None = None,
                  session_options: dict[str, Any] | None = None) -> PhoneSet:
    """Acquire every (selected) LUN of the EDL phone ``edl:SPEC_REST`` into ``out``.

    ``template`` is an AcquireRequest whose source/image are replaced per LUN.

    Raises:
        UsageError: a --lun the phone lacks, or --partition matching no LUN.
    """
    from imager.devices.usb.edl import open_session

    opts = {"loader": loader, **(session_options or {})}
    session, spec_lun = open_session(spec_rest, opts | ({"lun": luns[0]} if luns else {}))
    try:
        wanted = set(luns) or ({spec_lun} if "lun=" in spec_rest else set(session.luns))
        missing = wanted - set(session.luns)
        if missing:
            raise UsageError(f"--lun {sorted(missing)}: the phone has LUNs "
                             f"{sorted(session.luns)}")
        set_path, image_of = set_paths(out, template.image_format)
        phone = PhoneSet(_device(session, spec_rest), [], now_utc(),
                         command_line=list(template.command_line), path=set_path)
        gone = ""
        overall = _Overall(progress, sum(session.luns[n].sector_count * session.luns[n].sector_size
                                         for n in wanted))
        for lun in sorted(session.luns):
            if lun not in wanted:
                phone.luns.append(LunEntry(lun, "skipped", reason="not selected (--lun)"))
            elif gone:                        # the phone left and did not come back
                phone.luns.append(LunEntry(lun, "failed", os.path.basename(image_of(lun)),
                                           reason=f"not attempted: {gone}"))
            else:
                phone.luns.append(_one_lun(session, lun, image_of(lun), template,
                                           overall.for_lun(lun)))
                gone = phone.luns[-1].reason if phone.luns[-1].gone else ""
        if template.include and not any(e.image for e in phone.luns):
            raise UsageError(f"--partition {', '.join(template.include)}: no LUN has a "
                             "matching partition")
        phone.finished = now_utc()
        write_atomic(set_path, phone.to_json())
        return phone
    finally:
        session.close()


class _Overall:
    """One progress line over every selected LUN: bytes done so far plus this LUN's."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.before, self.current = progress, total, 0, 0

    def for_lun(self, lun: int) -> Progress:
        self.before += self.current
        self.current = 0

        def report(done: int, total: int, text: str) -> None:
            self.current = total
            if self.progress is not None:
                self.progress(self.before + done, self.total, f"LUN {lun}")

        return report


def _device(session: Any, spec_rest: str) -> dict[str, Any]:
    return {"kind": "edl", "spec": f"edl:{spec_rest}", "serial": session.serial,
            **session.identity_extra, "luns": sorted(session.luns),
            "loader": os.path.basename(session.loader_path),
            "loader_sha256": hashlib.sha256(session.loader).hexdigest(),
            "storage_info": {str(n): i.raw for n, i in sorted(session.luns.items())}}


def _one_lun(session: Any, lun: int, image: str, template: Any,
             progress: Progress | None) -> LunEntry:
    from imager.devices.usb.edl import EdlSource

    entry = LunEntry(lun, "failed", os.path.basename(image))
    try:
        source = EdlSource(session, lun)
        entry.sector_size, entry.sector_count = source.sector_size, source.sector_count
        entry.identity = source.identity.to_dict()
        entry.table, names = _table_kind(source)
        include = _patterns_here(template.include, names)
        if template.include and not include:
            return LunEntry(lun, "skipped", sector_size=source.sector_size,
                            sector_count=source.sector_count, identity=entry.identity,
                            table=entry.table, reason="no partition matches --partition")
        manifest = _acquire_lun(source, image, template, include, progress)
    except DeviceError as err:
        log.error("LUN %d: %s", lun, err)
        entry.reason = str(err)
        entry.gone = isinstance(err, DeviceGone)
        return entry
    entry.hashes = dict(manifest.hashes)
    entry.unread = [list(u) for u in manifest.unread]
    entry.not_acquired_sectors = sum(c for _, c in manifest.not_acquired)
    entry.image_sha256 = file_sha256(image)
    entry.status = "partial" if entry.unread or entry.not_acquired_sectors else "complete"
    return entry


def _acquire_lun(source: Any, image: str, template: Any, include: tuple[str, ...],
                 progress: Progress | None) -> Any:
    from imager.acquisition import run_acquire
    from imager.journal import journal_path

    req = dataclasses.replace(template, source=source.identity.path, image=image,
                              include=include)
    if os.path.exists(image) and not os.path.exists(journal_path(image)):
        return _finished(image, source.identity)
    manifest = run_acquire(req, progress=progress, source=source)
    from imager.report import write_report

    write_report(manifest, image)          # IMAGE.report.txt/.json, as a single acquire has
    return manifest


def _finished(image: str, identity: Identity) -> Any:
    """The manifest of a LUN image a previous run finished (same phone, same LUN)."""
    from imager.image.open import open_image

    reader = open_image(image)
    try:
        manifest = reader.manifest
    finally:
        reader.close()
    before = Identity.from_dict(manifest.source)
    if not before.same_device(identity) or before.extra.get("lun") != identity.extra.get("lun"):
        raise UsageError(f"{image} exists and was acquired from {before.path} (serial "
                         f"{before.serial!r}), not {identity.path}: choose another output")
    log.info("%s: already complete, kept", image)
    return manifest


