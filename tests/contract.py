"""The Source/Target contract: checks every backend must pass (file, block, stdin, USB, EDL...).

Backend test modules call ``check_source(source, expected_bytes)`` and
``check_target(make_target, backing_bytes)``; ``expected`` is the device content read by an
independent route (the backing file, the emulator's storage), never through the backend itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from imager.devices.base import Identity
from imager.errors import OutOfBounds


def check_source(source: object, expected: bytes, *, forward_only: bool = False) -> None:
    """Run every Source check against ``source`` whose true content is ``expected``."""
    ss = source.sector_size
    assert ss >= 512 and ss % 512 == 0
    assert source.sector_count * ss == len(expected)
    check_identity(source.identity, len(expected), ss)
    n = source.sector_count
    picks = [(0, 1), (1, 7), (n // 2, 3), (n - 1, 1)] if not forward_only else [(0, 1), (1, 7)]
    for lba, count in picks:
        data = source.read(lba, count)
        assert isinstance(data, (bytes, bytearray, memoryview))
        assert len(data) == count * ss, f"read({lba}, {count}) returned {len(data)} bytes"
        assert bytes(data) == expected[lba * ss:(lba + count) * ss], f"content at LBA {lba}"
    if not forward_only:
        assert source.read(5, 0) == b""
        whole = b"".join(bytes(source.read(lba, min(4096, n - lba))) for lba in range(0, n, 4096))
        assert hashlib.sha256(whole).digest() == hashlib.sha256(expected).digest()
    for lba, count in ((n, 1), (n - 1, 2), (-1, 1), (0, n + 1)):
        with pytest.raises(OutOfBounds) as info:
            source.read(lba, count)
        assert str(lba) in str(info.value)


def check_identity(identity: Identity, size: int, sector_size: int) -> None:
    assert isinstance(identity, Identity)
    assert identity.size_bytes == size
    assert identity.sector_size == sector_size
    assert identity.kind and identity.path
    assert Identity.from_dict(identity.to_dict()) == identity
    assert identity.same_device(identity)


def check_target(make_target: Callable[[], object], read_backing: Callable[[], bytes]) -> None:
    """Writes land exactly where asked; bounds and alignment are enforced; flush is durable."""
    target = make_target()
    try:
        ss, n = target.sector_size, target.sector_count
        before = read_backing()
        patches = {0: b"\xa5" * ss, n // 2: bytes(range(256)) * (2 * ss // 256), n - 1: b"\x5a" * ss}
        for lba, data in patches.items():
            target.write(lba, data)
            assert bytes(target.read(lba, len(data) // ss)) == data
        target.flush()
        after = bytearray(before)
        for lba, data in patches.items():
            after[lba * ss:lba * ss + len(data)] = data
        assert read_backing() == bytes(after)
        with pytest.raises(ValueError):
            target.write(0, b"\0" * (ss - 1))
        with pytest.raises(OutOfBounds):
            target.write(n, b"\0" * ss)
        with pytest.raises(OutOfBounds):
            target.write(n - 1, b"\0" * 2 * ss)
        assert read_backing() == bytes(after), "a refused write changed the device"
    finally:
        target.close()
