"""Whole-image hashes, per-chunk check values and chunk classification (no per-byte loops)."""

from __future__ import annotations

import hashlib
import os
import zlib

from formats.extent import Kind
from imager.errors import UsageError

HASHES = ("md5", "sha1", "sha256")
_zero_cache: dict[int, bytes] = {}


def zeros(nbytes: int) -> bytes:
    """A shared zero buffer of ``nbytes`` (cached for the few chunk sizes in use)."""
    buf = _zero_cache.get(nbytes)
    if buf is None:
        if len(_zero_cache) > 8:
            _zero_cache.clear()
        buf = _zero_cache[nbytes] = bytes(nbytes)
    return buf


def classify(data: bytes) -> tuple[Kind, int | None]:
    """DATA, ZERO or FILL (every byte the same non-zero value) for one chunk's bytes.

    Compares whole buffers (memcmp speed); the first 512 bytes reject most DATA chunks early.
    """
    if not data:
        return Kind.ZERO, None
    first = data[0]
    head = data[:512]
    if head != bytes([first]) * len(head):
        return Kind.DATA, None
    if first == 0:
        return (Kind.ZERO, None) if data == zeros(len(data)) else (Kind.DATA, None)
    return (Kind.FILL, first) if data == bytes([first]) * len(data) else (Kind.DATA, None)


def chunk_digest(algo: str, data: bytes | memoryview) -> str:
    """The per-chunk check value of ``data`` as lowercase hex."""
    if algo == "crc32":
        return f"{zlib.crc32(data):08x}"
    return hashlib.new(algo, data).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a whole file, read in 8 MiB blocks into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def parse_hash_list(text: str) -> tuple[str, ...]:
    """``md5,sha1,sha256`` -> ('md5', 'sha1', 'sha256'), validated and de-duplicated.

    Raises:
        UsageError: an unknown algorithm.
    """
    names = []
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        if name not in HASHES:
            raise UsageError(f"--hash {name!r}: choose from {', '.join(HASHES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("--hash needs at least one algorithm")
    return tuple(names)


class MultiHash:
    """Several hashlib objects fed the same bytes in one pass."""

    def __init__(self, names: tuple[str, ...] | list[str]) -> None:
        self.names = tuple(names)
        self._h = [hashlib.new(n) for n in self.names]

    def update(self, data: bytes | memoryview) -> None:
        for h in self._h:
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {n: h.hexdigest() for n, h in zip(self.names, self._h)}


class ThreadedHash:
    """A MultiHash fed from its own thread, so a writer's fsyncs and the hashing overlap.

    (Added for performance: hashlib releases the GIL on large buffers, so the whole-image hash
    runs beside the compressing workers instead of on the writer's critical path.) ``update``
    queues the buffer (at most ``depth`` pending, bounding memory); ``close`` drains the queue
    and hands the MultiHash back with every byte hashed in order.
    """

    def __init__(self, inner: MultiHash, depth: int = 4) -> None:
        import queue
        import threading

        self.inner = inner
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="imager-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self.inner.update(data)

    def update(self, data: bytes | memoryview) -> None:
        self._queue.put(data)

    def close(self) -> MultiHash:
        """Wait until every queued buffer is hashed; returns the MultiHash."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self.inner

    def hexdigests(self) -> dict[str, str]:
        return self.close().hexdigests()
