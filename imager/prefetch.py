"""Running a producer (a reader's chunk iterator) in its own thread, a bounded distance ahead.

Reading, decompressing and checking a chunk (os.pread, zstandard, hashlib) release the GIL, so
a consumer that hashes or writes (also GIL-free) keeps the second core busy. Only the producer
thread advances the iterator, so readers need not be thread-safe; memory is bounded by
``depth`` items in the queue plus one being made and one being used.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def ahead(items: Iterable[T], depth: int, name: str = "imager-prefetch") -> Iterator[T]:
    """Yield ``items`` in order, produced by a thread up to ``depth`` items ahead.

    An exception raised by the producer is re-raised here, after the items before it. Closing
    the returned generator early (or an exception in the consumer) stops the producer.
    """
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as err:  # noqa: BLE001 -- re-raised in the consumer
            put((False, err))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            more, item = q.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()
