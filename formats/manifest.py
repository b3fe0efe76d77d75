"""The manifest: the truth about an image, as self-checksummed canonical JSON.

Versioned major.minor: a reader accepts any minor of its major (unknown keys of a newer minor are
ignored) and refuses another major. ``checksum`` is the sha256 of the canonical JSON (sorted keys,
no spaces, ASCII) of every other field. Parsing is strict: the bytes may come from a hostile file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from formats.errors import ChecksumMismatch, FormatError, InvalidField
from formats.extent import Extent, Kind, merge

FORMAT_NAME = "imager-manifest"
VERSION = (1, 1)
CHECK_HEX_LEN = {"blake3": 64, "sha256": 64, "sha1": 40, "md5": 32, "crc32": 8, "blake2b": 128}
MAX_SECTORS = 1 << 48
_HEX = re.compile(r"[0-9a-f]*\Z")


@dataclass(frozen=True)
class KindRun:
    """``count`` consecutive chunks from chunk ``start`` that share a kind (and fill byte)."""

    start: int
    count: int
    kind: Kind
    fill: int | None = None


@dataclass(frozen=True)
class Manifest:
    """Everything an image says about itself. LBA ranges are ``(start_lba, count)``."""

    sector_size: int
    sector_count: int
    chunk_sectors: int
    chunk_runs: tuple[KindRun, ...]
    chunk_checks: tuple[str, ...]          # one per DATA chunk, in chunk order
    chunk_check: str = "sha256"            # algorithm of chunk_checks (hex digests)
    hashes: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)
    table_sectors: tuple[tuple[int, bytes], ...] = ()
    unread: tuple[tuple[int, int], ...] = ()
    not_acquired: tuple[tuple[int, int], ...] = ()
    case: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    command_line: tuple[str, ...] = ()
    tool_name: str = "imager"
    tool_version: str = ""
    image_format: str = "native"
    version: tuple[int, int] = VERSION

    @property
    def chunk_count(self) -> int:
        return -(-self.sector_count // self.chunk_sectors) if self.chunk_sectors else 0

    def chunk_extent(self, index: int, kind: Kind = Kind.DATA, fill: int | None = None) -> Extent:
        """The LBA extent of chunk ``index`` (the last chunk may be shorter)."""
        start = index * self.chunk_sectors
        return Extent(start, min(self.chunk_sectors, self.sector_count - start), kind, fill)

    def iter_chunks(self) -> Iterator[tuple[int, Extent, str | None]]:
        """(index, extent with the chunk's kind, check value or None) for every chunk."""
        checks = iter(self.chunk_checks)
        for run in self.chunk_runs:
            for index in range(run.start, run.start + run.count):
                check = next(checks) if run.kind is Kind.DATA else None
                yield index, self.chunk_extent(index, run.kind, run.fill), check

    def extents(self) -> list[Extent]:
        """Sector-precise map: chunk kinds with the UNREAD / NOT_ACQUIRED ranges laid over."""
        special = sorted([(s, c, Kind.UNREAD) for s, c in self.unread]
                         + [(s, c, Kind.NOT_ACQUIRED) for s, c in self.not_acquired])
        out: list[Extent] = []
        j = 0
        for ext in merge([e for _, e, _ in self.iter_chunks()]):
            pos = ext.start_lba
            while pos < ext.end_lba:
                while j < len(special) and special[j][0] + special[j][1] <= pos:
                    j += 1
                if j < len(special) and special[j][0] <= pos:
                    end = min(special[j][0] + special[j][1], ext.end_lba)
                    out.append(Extent(pos, end - pos, special[j][2]))
                else:
                    end = min(special[j][0] if j < len(special) else ext.end_lba, ext.end_lba)
                    out.append(Extent(pos, end - pos, ext.kind, ext.fill))
                pos = end
        return merge(out)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object without its checksum."""
        return {
            "format": FORMAT_NAME, "version": f"{self.version[0]}.{self.version[1]}",
            "tool": {"name": self.tool_name, "version": self.tool_version},
            "command_line": list(self.command_line), "image_format": self.image_format,
            "source": self.source, "sector_size": self.sector_size,
            "sector_count": self.sector_count, "chunk_sectors": self.chunk_sectors,
            "chunk_check": self.chunk_check,
            "chunk_runs": [[r.start, r.count, r.kind.value] + ([r.fill] if r.kind is Kind.FILL
                                                               else []) for r in self.chunk_runs],
            "chunk_checks": list(self.chunk_checks), "hashes": self.hashes,
            "table": self.table,
            "table_sectors": [[lba, base64.b64encode(raw).decode()]
                              for lba, raw in self.table_sectors],
            "unread": [list(r) for r in self.unread],
            "not_acquired": [list(r) for r in self.not_acquired],
            "case": self.case, "options": self.options, "timings": self.timings,
            "started": self.started, "finished": self.finished,
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes including the ``checksum`` field."""
        obj = self.to_dict()
        obj["checksum"] = _digest(obj)
        return _canonical(obj)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()


def runs_append(runs: list[KindRun], index: int, kind: Kind, fill: int | None) -> None:
    """Add chunk ``index`` (the next one) to a run list, extending the last run when it can."""
    if runs and runs[-1].kind is kind and runs[-1].fill == fill \
            and runs[-1].start + runs[-1].count == index:
        last = runs.pop()
        runs.append(KindRun(last.start, last.count + 1, kind, fill))
    else:
        runs.append(KindRun(index, 1, kind, fill))


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and verify manifest JSON bytes.

    Raises:
        FormatError: not JSON, wrong format or major version, a field of the wrong type or
            range, inconsistent chunk runs/checks. ChecksumMismatch when the checksum is wrong.
    """
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise FormatError(f"manifest: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise InvalidField("manifest", "top level", type(obj).__name__, "must be an object")
    stored = _get(obj, "checksum", str)
    body = {k: v for k, v in obj.items() if k != "checksum"}
    actual = _digest(body)
    if stored != actual:
        raise ChecksumMismatch("manifest", expected=stored, actual=actual)
    return _from_dict(body)


def _get(obj: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise InvalidField("manifest", key, None, "missing")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise InvalidField("manifest", key, type(value).__name__, f"must be {typ}")
    return value


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = _get(obj, key, int)
    if isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidField("manifest", key, value, f"must be in {lo}..{hi}")
    return value


def _version(obj: dict[str, Any]) -> tuple[int, int]:
    if _get(obj, "format", str) != FORMAT_NAME:
        raise InvalidField("manifest", "format", obj["format"], f"expected {FORMAT_NAME}")
    text = _get(obj, "version", str)
    match = re.fullmatch(r"(\d{1,4})\.(\d{1,4})", text)
    if not match:
        raise InvalidField("manifest", "version", text, "expected MAJOR.MINOR")
    major, minor = int(match[1]), int(match[2])
    if major != VERSION[0]:
        raise InvalidField("manifest", "version", text, f"this reader knows major {VERSION[0]}")
    return major, minor


def _ranges(obj: dict[str, Any], key: str, sector_count: int) -> tuple[tuple[int, int], ...]:
    out = []
    for item in _get(obj, key, list):
        if not (isinstance(item, list) and len(item) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                and item[0] >= 0 and item[1] > 0 and item[0] + item[1] <= sector_count):
            raise InvalidField("manifest", key, item, f"not an LBA range inside 0..{sector_count}")
        out.append((item[0], item[1]))
    return tuple(out)


def _runs(obj: dict[str, Any], chunk_count: int) -> tuple[KindRun, ...]:
    runs, expect = [], 0
    for item in _get(obj, "chunk_runs", list):
        try:
            start, count, kind_text, *rest = item
            kind = Kind(kind_text)
            fill = rest[0] if rest else None
            run = KindRun(start, count, kind, fill)
        except (TypeError, ValueError) as err:
            raise InvalidField("manifest", "chunk_runs", item, str(err)) from err
        ok_fill = (fill is None and len(rest) == 0) if kind is not Kind.FILL else \
            (len(rest) == 1 and isinstance(fill, int) and 0 <= fill <= 255)
        if start != expect or not isinstance(count, int) or count <= 0 or not ok_fill:
            raise InvalidField("manifest", "chunk_runs", item, f"expected a run from {expect}")
        runs.append(run)
        expect += count
    if expect != chunk_count:
        raise InvalidField("manifest", "chunk_runs", expect, f"cover {chunk_count} chunks")
    return tuple(runs)


def _checks(obj: dict[str, Any], algo: str, runs: tuple[KindRun, ...]) -> tuple[str, ...]:
    checks = _get(obj, "chunk_checks", list)
    n_data = sum(r.count for r in runs if r.kind is Kind.DATA)
    if len(checks) != n_data:
        raise InvalidField("manifest", "chunk_checks", len(checks), f"{n_data} DATA chunks")
    width = CHECK_HEX_LEN[algo]
    for value in checks:
        if not (isinstance(value, str) and len(value) == width and _HEX.match(value)):
            raise InvalidField("manifest", "chunk_checks", value, f"not {width} hex digits")
    return tuple(checks)


def _table_sectors(obj: dict[str, Any], sector_count: int) -> tuple[tuple[int, bytes], ...]:
    out = []
    for item in _get(obj, "table_sectors", list):
        try:
            lba, text = item
            raw = base64.b64decode(text, validate=True)
        except (TypeError, ValueError, binascii.Error) as err:
            raise InvalidField("manifest", "table_sectors", str(item)[:80], str(err)) from err
        if not (isinstance(lba, int) and 0 <= lba < sector_count):
            raise InvalidField("manifest", "table_sectors", lba, "LBA outside the image")
        out.append((lba, raw))
    return tuple(out)


def _str_dict(obj: dict[str, Any], key: str) -> dict[str, str]:
    value = _get(obj, key, dict)
    if not all(isinstance(v, str) for v in value.values()):
        raise InvalidField("manifest", key, value, "values must be strings")
    return value


def _from_dict(obj: dict[str, Any]) -> Manifest:
    version = _version(obj)
    ss = _int(obj, "sector_size", 512, 1 << 16)
    if ss % 512:
        raise InvalidField("manifest", "sector_size", ss, "not a multiple of 512")
    count = _int(obj, "sector_count", 0, MAX_SECTORS)
    chunk = _int(obj, "chunk_sectors", 1, (1 << 31) // ss)
    algo = _get(obj, "chunk_check", str)
    if algo not in CHECK_HEX_LEN:
        raise InvalidField("manifest", "chunk_check", algo, f"one of {sorted(CHECK_HEX_LEN)}")
    runs = _runs(obj, -(-count // chunk))
    tool = _get(obj, "tool", dict)
    timings = _get(obj, "timings", dict)
    if not all(isinstance(v, (int, float)) for v in timings.values()):
        raise InvalidField("manifest", "timings", timings, "values must be numbers")
    cmd = _get(obj, "command_line", list)
    if not all(isinstance(v, str) for v in cmd):
        raise InvalidField("manifest", "command_line", cmd, "must be strings")
    return Manifest(
        sector_size=ss, sector_count=count, chunk_sectors=chunk, chunk_runs=runs,
        chunk_checks=_checks(obj, algo, runs), chunk_check=algo,
        hashes=_str_dict(obj, "hashes"), source=_get(obj, "source", dict),
        table=_get(obj, "table", dict), table_sectors=_table_sectors(obj, count),
        unread=_ranges(obj, "unread", count), not_acquired=_ranges(obj, "not_acquired", count),
        case=_str_dict(obj, "case"), options=_get(obj, "options", dict), timings=timings,
        started=_get(obj, "started", str), finished=_get(obj, "finished", str),
        command_line=tuple(cmd), tool_name=str(tool.get("name", "")),
        tool_version=str(tool.get("version", "")),
        image_format=_get(obj, "image_format", str), version=version)
