"""Whole-image hashes, per-chunk check values and chunk classification (no per-byte loops)."""

from __future__ import annotations

import hashlib
import os
import zlib
from typing import Any

import blake3

from formats.extent import Kind
from imager.errors import UsageError

HASHES = ("md5", "sha1", "sha256")
# The per-chunk check (and content address) of new images: measured in docs/FORMAT.md; blake3
# runs ~5x faster than sha256 with SHA-NI here and is as strong. Images with sha256 still read.
CHUNK_CHECK = "blake3"
_constants: dict[tuple[int, int], bytes] = {}


def zeros(nbytes: int) -> bytes:
    """A shared zero buffer of ``nbytes`` (cached for the few chunk sizes in use)."""
    return constant(nbytes, 0)


def constant(nbytes: int, fill: int | None) -> bytes:
    """A shared buffer of ``nbytes`` copies of ``fill`` (zeros for None)."""
    key = (nbytes, fill or 0)
    buf = _constants.get(key)
    if buf is None:
        if len(_constants) > 8:
            _constants.clear()
        buf = _constants[key] = bytes([fill or 0]) * nbytes
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
    if algo == "blake3":
        return blake3.blake3(data).hexdigest()
    if algo == "crc32":
        return f"{zlib.crc32(data):08x}"
    return hashlib.new(algo, data).hexdigest()


def fast_digest(data: bytes | memoryview) -> bytes:
    """A 32-byte blake3 digest: cheap (~9 GiB/s here) and collision-resistant, for checking
    that bytes read back equal bytes written without keeping them."""
    return blake3.blake3(data).digest()


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

    def parts(self) -> list[tuple[str, Any]]:
        """(name, hashlib object) pairs, for callers that feed each from its own thread."""
        return list(zip(self.names, self._h))

    def hexdigests(self) -> dict[str, str]:
        return {n: h.hexdigest() for n, h in zip(self.names, self._h)}


class ParallelHash:
    """A MultiHash whose algorithms are each fed from their own thread, in order.

    (Added for performance: md5, sha1 and sha256 of one image run side by side on a multi-core
    machine instead of one after another, and the caller's thread only queues buffers.)
    ``update`` queues the buffer for every algorithm (at most ``depth`` pending each, bounding
    memory; 0: the caller bounds it) and calls ``done`` once per algorithm after hashing it;
    ``close`` waits until everything queued is hashed, ``abandon`` only until the threads end
    (what is still queued is released unhashed). Use as a context manager, or call ``close``
    or ``abandon`` in a ``finally``, so no thread outlives an error.
    """

    def __init__(self, names: tuple[str, ...] | list[str] | MultiHash, depth: int = 4) -> None:
        import queue
        import threading

        self.inner = names if isinstance(names, MultiHash) else MultiHash(names)
        self.names = self.inner.names
        self._skip = False
        self._queues: list[Any] = [queue.Queue(depth) for _ in self.names]
        self._threads = [threading.Thread(target=self._run, args=(h, q), daemon=True,
                                          name=f"imager-hash-{name}")
                         for (name, h), q in zip(self.inner.parts(), self._queues)]
        for t in self._threads:
            t.start()

    def _run(self, h: Any, q: Any) -> None:
        while (item := q.get()) is not None:
            data, done = item
            if not self._skip:
                h.update(data)
            if done is not None:
                done()

    def update(self, data: bytes | memoryview, done: Any = None) -> None:
        for q in self._queues:
            q.put((data, done))

    def close(self) -> None:
        """Wait until every queued buffer is hashed (idempotent)."""
        for q, t in zip(self._queues, self._threads):
            if t.is_alive():
                q.put(None)
        for t in self._threads:
            t.join()

    def abandon(self) -> None:
        """Stop without hashing what is still queued (its ``done`` callbacks still run)."""
        self._skip = True
        self.close()

    def hexdigests(self) -> dict[str, str]:
        self.close()
        return self.inner.hexdigests()

    def __enter__(self) -> ParallelHash:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
