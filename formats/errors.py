"""The error tree of the pure format layer."""

from __future__ import annotations


class FormatError(Exception):
    """Root of every error raised by ``formats``: the input bytes are not what they claim."""


class Truncated(FormatError):
    """Fewer bytes than a structure needs."""

    def __init__(self, what: str, needed: int, got: int) -> None:
        super().__init__(f"{what}: truncated, needed {needed} bytes, got {got}")
        self.what, self.needed, self.got = what, needed, got


class BadMagic(FormatError):
    """A signature field does not hold the expected value."""

    def __init__(self, what: str, expected: object, actual: object) -> None:
        super().__init__(f"{what}: bad magic, expected {expected!r}, got {actual!r}")
        self.what, self.expected, self.actual = what, expected, actual


class ChecksumMismatch(FormatError):
    """A stored check value does not match the data it covers."""

    def __init__(self, what: str, *, expected: int | str, actual: int | str,
                 lba: int | None = None, chunk: int | None = None) -> None:
        where = "" if lba is None else f" at LBA {lba}"
        where += "" if chunk is None else f" in chunk {chunk}"
        exp = f"{expected:#010x}" if isinstance(expected, int) else expected
        act = f"{actual:#010x}" if isinstance(actual, int) else actual
        super().__init__(f"{what}{where}: checksum mismatch, expected {exp}, got {act}")
        self.what, self.expected, self.actual, self.lba, self.chunk = (
            what, expected, actual, lba, chunk)


class InvalidField(FormatError):
    """A field holds a value the format does not allow."""

    def __init__(self, what: str, field: str, value: object, reason: str) -> None:
        super().__init__(f"{what}: invalid {field}={value!r}: {reason}")
        self.what, self.field, self.value, self.reason = what, field, value, reason
