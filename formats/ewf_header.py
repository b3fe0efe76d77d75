"""The text of EWF header2 / header sections (case metadata), parse and build.

Layouts measured from ewfacquire 20140813 ``-f encase6`` (../shared/specs/ewf-e01.md) and
checked against libewf's EWF document:

- header2: zlib(UTF-16LE with BOM FF FE), LF line ends, categories main/srce/sub; dates are
  POSIX epoch strings.
- header: zlib(ASCII), CRLF line ends, one "main" category; dates as "YYYY M D h m s" (we write
  UTC; EnCase writes local time).
Values may not contain tab, CR or LF (they would break the layout): those become spaces.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from formats.errors import FormatError, InvalidField

MAX_TEXT_BYTES = 16 << 20   # a header bigger than this is hostile, not a case file

HEADER2_KEYS = ("a", "c", "n", "e", "t", "md", "sn", "av", "ov", "m", "u", "p", "dc")
HEADER_KEYS = ("c", "n", "a", "e", "t", "av", "ov", "m", "u", "p")
# The srce and sub categories exactly as ewfacquire writes them (no sources, no subjects).
_HEADER2_TAIL = ("srce\n0\t1\np\tn\tid\tev\ttb\tlo\tpo\tah\tgu\taq\n0\t0\n"
                 "\t\t\t\t\t-1\t-1\t\t\t\n\n"
                 "sub\n0\t1\np\tn\tid\tnu\tco\tgu\n0\t0\n\t\t\t\t1\t\n\n")


@dataclass(frozen=True)
class HeaderValues:
    """Case metadata as EWF stores it. Dates are POSIX seconds (UTC) or None."""

    case_number: str = ""
    evidence_number: str = ""
    description: str = ""
    examiner: str = ""
    notes: str = ""
    model: str = ""
    serial: str = ""
    version: str = ""
    platform: str = ""
    acquired: int | None = None
    system: int | None = None
    password_hash: str = "0"
    fields: tuple[tuple[str, str], ...] = ()   # every raw key/value pair as parsed


_NAMES = {"a": "description", "c": "case_number", "n": "evidence_number", "e": "examiner",
          "t": "notes", "md": "model", "sn": "serial", "av": "version", "ov": "platform",
          "p": "password_hash"}


def _clean(value: str) -> str:
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _value(values: HeaderValues, key: str, epoch_dates: bool) -> str:
    if key in ("m", "u"):
        stamp = values.acquired if key == "m" else values.system
        if stamp is None:
            return ""
        return str(stamp) if epoch_dates else " ".join(map(str, civil_from_epoch(stamp)))
    if key == "dc":
        return ""
    return _clean(getattr(values, _NAMES[key]))


def header2_text(values: HeaderValues) -> str:
    """The header2 text (before BOM, UTF-16 and zlib)."""
    row = "\t".join(_value(values, k, True) for k in HEADER2_KEYS)
    return "3\nmain\n" + "\t".join(HEADER2_KEYS) + "\n" + row + "\n\n" + _HEADER2_TAIL


def header_text(values: HeaderValues) -> str:
    """The header text (ASCII, CRLF)."""
    row = "\t".join(_value(values, k, False) for k in HEADER_KEYS)
    return "1\r\nmain\r\n" + "\t".join(HEADER_KEYS) + "\r\n" + row + "\r\n\r\n"


def build_header2(values: HeaderValues) -> bytes:
    """The header2 section payload: zlib(UTF-16LE with BOM)."""
    return zlib.compress(b"\xff\xfe" + header2_text(values).encode("utf-16-le"))


def build_header(values: HeaderValues) -> bytes:
    """The header section payload: zlib(ASCII); non-ASCII characters become '?'."""
    return zlib.compress(header_text(values).encode("ascii", errors="replace"))


def _inflate(payload: bytes, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, MAX_TEXT_BYTES + 1)
    except zlib.error as err:
        raise InvalidField(what, "zlib data", len(payload), str(err)) from err
    if len(text) > MAX_TEXT_BYTES or not inflater.eof:
        raise InvalidField(what, "text", len(text), "truncated or larger than 16 MiB")
    return text


def parse_header2(payload: bytes) -> HeaderValues:
    """Parse a header2 payload (UTF-16 with BOM, either byte order)."""
    raw = _inflate(payload, "EWF header2 section")
    if raw[:2] == b"\xfe\xff":
        text = raw[2:].decode("utf-16-be", errors="replace")
    else:
        text = raw[2 if raw[:2] == b"\xff\xfe" else 0:].decode("utf-16-le", errors="replace")
    return values_from_text(text, "EWF header2 section")


def parse_header(payload: bytes) -> HeaderValues:
    """Parse a header payload (codepage text; decoded as cp1252, unknown bytes replaced)."""
    text = _inflate(payload, "EWF header section").decode("cp1252", errors="replace")
    return values_from_text(text, "EWF header section")


def values_from_text(text: str, what: str) -> HeaderValues:
    """HeaderValues from header or header2 text (the "main" category)."""
    lines = text.splitlines()
    try:
        main = lines.index("main")
        keys, row = lines[main + 1].split("\t"), lines[main + 2].split("\t")
    except (ValueError, IndexError) as err:
        raise FormatError(f"{what}: no main category with keys and values") from err
    pairs = tuple(zip(keys, row))
    found = dict(pairs)
    named = {name: found.get(key, "") for key, name in _NAMES.items()}
    named["password_hash"] = named["password_hash"] or "0"
    return HeaderValues(acquired=parse_date(found.get("m", "")),
                        system=parse_date(found.get("u", "")), fields=pairs, **named)


def parse_date(value: str) -> int | None:
    """POSIX seconds from "1142163845" or "2002 3 4 10 19 59" (read as UTC); else None."""
    parts = value.split()
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0])
    if len(parts) == 6 and all(p.isdigit() for p in parts):
        y, mo, d, h, mi, s = (int(p) for p in parts)
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
    return None


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_epoch(seconds: int) -> tuple[int, int, int, int, int, int]:
    """(year, month, day, hour, minute, second) in UTC of POSIX ``seconds``."""
    days, rem = divmod(seconds, 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return (yoe + era * 400 + (month <= 2), month, day, rem // 3600, rem // 60 % 60, rem % 60)
