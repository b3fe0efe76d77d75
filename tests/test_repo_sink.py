"""RepoSink and SnapshotReader through the Sink/ImageReader protocols, on constructed chunks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from formats.errors import ChecksumMismatch
from formats.extent import Extent, Kind
from imager.image.base import ImageReader, Sink

SS, CS = 512, 8          # 4 KiB chunks of 512-byte sectors


def test_every_kind_round_trips_and_duplicates_are_stored_once(tmp_path: Path) -> None:
    from imager.repo.reader import SnapshotReader
    from imager.repo.sink import RepoSink
    from imager.repo.store import Repository

    repo = Repository.init(tmp_path / "repo", chunk_size=4096)
    a, b = os.urandom(CS * SS), os.urandom(CS * SS)
    sink = RepoSink(repo, sector_size=SS, sector_count=56, hash_image=True)
    assert isinstance(sink, Sink)
    sink.write(Extent(0, CS), a)
    sink.write(Extent(8, CS), b)
    sink.write(Extent(16, CS), a)                       # the same bytes again
    sink.write(Extent(24, CS, Kind.ZERO), None)
    sink.write(Extent(32, CS, Kind.FILL, 0xFF), None)
    sink.write(Extent(40, 4, Kind.UNREAD), None)
    # LBAs 44..55 are never written: recorded as NOT_ACQUIRED, not as zeros
    sink.finalize(None)
    expected = a + b + a + bytes(CS * SS) + b"\xff" * CS * SS + bytes(16 * SS)
    assert sink.stats["new_chunks"] == 2 and sink.stats["data_chunks"] == 3
    assert sink.snapshot is not None
    assert sink.snapshot["hashes"]["sha256"] == hashlib.sha256(expected).hexdigest()

    reader = SnapshotReader(f"{tmp_path / 'repo'}@latest")
    assert isinstance(reader, ImageReader)
    assert (reader.sector_size, reader.sector_count, reader.chunk_sectors) == (SS, 56, CS)
    chunks = list(reader.chunks())
    assert [c.extent.start_lba for c in chunks] == [0, 8, 16, 24, 32, 40, 44, 48]
    assert b"".join(reader.read_chunk(c) for c in chunks) == expected
    assert reader.read(5, 30) == expected[5 * SS:35 * SS]
    assert [(e.start_lba, e.count, e.kind) for e in reader.extents()] == [
        (0, 24, Kind.DATA), (24, 8, Kind.ZERO), (32, 8, Kind.FILL), (40, 4, Kind.UNREAD),
        (44, 12, Kind.NOT_ACQUIRED)]
    assert chunks[0].check == hashlib.sha256(a).hexdigest()
    reader.close()


def test_a_chunk_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    from imager.repo.reader import SnapshotReader
    from imager.repo.sink import RepoSink
    from imager.repo.store import Repository

    repo = Repository.init(tmp_path / "repo", chunk_size=4096)
    data = bytes(range(256)) * 16                        # compressible: stored as zstd
    sink = RepoSink(repo, sector_size=SS, sector_count=CS)
    sink.write(Extent(0, CS), data)
    sink.finalize(None)
    (pack,) = (tmp_path / "repo" / "packs").glob("*/*.pack")
    raw = bytearray(pack.read_bytes())
    raw[-3] ^= 0xFF                                      # inside the zstd frame
    pack.write_bytes(bytes(raw))
    reader = SnapshotReader(f"{tmp_path / 'repo'}@latest")
    with pytest.raises(ChecksumMismatch) as err:
        reader.read(0, CS)
    assert hashlib.sha256(data).hexdigest() in str(err.value) and pack.stem in str(err.value)


def test_backup_into_a_directory_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    from tests.repo_support import imager

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "disk.img").write_bytes(os.urandom(1 << 20))
    rc, _, err = imager("backup", tmp_path / "disk.img", tmp_path / "photos", "-q")
    assert rc == 2 and "not an empty directory or a repository" in err
    rc, _, err = imager("snapshots", tmp_path / "nothing")
    assert rc == 2 and "not an imager repository" in err
