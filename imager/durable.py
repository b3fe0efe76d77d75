"""Durable file updates: what survives a kill -9 or a power cut is either the old or the new file.

One place for the write-temp → fsync → rename → fsync-directory sequence that journals, manifests,
mapfiles, set manifests and the snapshot repository all rely on.
"""

from __future__ import annotations

import os
import uuid


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_parent(path: str | os.PathLike[str]) -> None:
    """fsync the directory holding ``path`` so a newly created file survives a power cut."""
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Publish ``data`` at ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_parent(path)
