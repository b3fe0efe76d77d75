"""The acquisition's fast paths: blake3 chunk checks and holes of sparse source files.

Expected values come from b3sum, sha256sum and stock zstd; holes are made by construction
(truncate, then writes at known offsets).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from formats.extent import Kind
from imager.devices.file import FileSource
from imager.image.native import NativeReader
from tests.acquire_support import MiB, cli, small_source, tool_hash, zstd_d_sha256
from tests.conftest import loop_device, need_tool


def b3sum(data: bytes) -> str:
    need_tool("b3sum")
    return subprocess.run(["b3sum", "--no-names"], input=data, check=True,
                          capture_output=True).stdout.decode().strip()


def test_new_images_carry_blake3_chunk_checks_equal_to_b3sum(tmp_path: Path) -> None:
    src = small_source(tmp_path / "src.img", mib=9)
    image = tmp_path / "i.imgz"
    assert cli("acquire", str(src), str(image), "--chunk-size", "1MiB", "--quiet")[0] == 0
    data = src.read_bytes()
    with NativeReader(str(image)) as reader:
        assert reader.manifest.chunk_check == "blake3"
        assert reader.manifest.version == (1, 1)
        chunks = [c for c in reader.chunks() if c.extent.kind is Kind.DATA]
        assert len(chunks) == 6  # random megabytes 0, 3, 4, 7, 8 and the 5-sector tail
        for c in chunks:
            piece = data[c.extent.start_lba * 512:c.extent.end_lba * 512]
            assert c.check == b3sum(piece)
    assert cli("verify", "--quiet", str(image))[0] == 0


def sparse_file(path: Path) -> list[tuple[int, int]]:
    """A 16 MiB file of holes with data written at two places; returns [(offset, length)]."""
    written = [(3 * MiB, 4096), (9 * MiB + 8192, 2 * MiB)]
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
        for offset, length in written:
            f.seek(offset)
            f.write(os.urandom(length))
    return written


def holes_supported(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) > 0
    except OSError:
        return False
    finally:
        os.close(fd)


def test_known_zero_sees_the_holes_of_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    written = sparse_file(path)
    if not holes_supported(path):
        pytest.skip("this file system does not report holes")
    with FileSource(str(path)) as src:
        mib = MiB // 512
        assert src.known_zero(0, 3 * mib)                     # before the first write
        assert not src.known_zero(0, 3 * mib + 1)             # takes in its first sector
        assert not src.known_zero(3 * mib, mib)
        assert src.known_zero(4 * mib, 5 * mib)               # between the writes
        assert not src.known_zero(8 * mib, 2 * mib)
        assert src.known_zero(12 * mib, 4 * mib)              # the tail, up to the end
        for offset, length in written:                        # never a hole where data is
            assert not src.known_zero(offset // 512, -(-length // 512))


def test_a_block_device_is_never_a_hole(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    sparse_file(path)
    with loop_device(path) as dev, FileSource(dev) as src:
        assert src.identity.kind == "block"
        assert not src.known_zero(0, 2048)


def test_acquiring_a_sparse_file_skips_reading_its_holes(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sparse.img"
    written = sparse_file(path)
    if not holes_supported(path):
        pytest.skip("this file system does not report holes")
    reads: list[tuple[int, int]] = []
    real = FileSource._read

    def spy(self: FileSource, lba: int, count: int) -> bytes:
        reads.append((lba, count))
        return real(self, lba, count)

    monkeypatch.setattr(FileSource, "_read", spy)
    from imager.acquisition import AcquireRequest, run_acquire

    image = tmp_path / "i.imgz"
    manifest = run_acquire(AcquireRequest(source=str(path), image=str(image),
                                          chunk_bytes=MiB, hashes=("md5", "sha256")))
    read_mib = sorted({lba * 512 // MiB for lba, count in reads if count == MiB // 512})
    assert read_mib == [3, 9, 10, 11]  # only the chunks holding written bytes
    assert manifest.hashes == {"md5": tool_hash("md5sum", path),
                               "sha256": tool_hash("sha256sum", path)}
    assert zstd_d_sha256(image) == tool_hash("sha256sum", path)
    with NativeReader(str(image)) as reader:
        kinds = [c.extent.kind for c in reader.chunks()]
    assert [i for i, k in enumerate(kinds) if k is Kind.DATA] == [
        i for i in range(16) if any(o < (i + 1) * MiB and o + n > i * MiB for o, n in written)]


def test_read_from_medium_bypasses_a_stale_page_cache(tmp_path: Path) -> None:
    """A loop device's page cache holds what was written; the backing file is then changed
    underneath it. A cached read still sees the old bytes, the read-back sees the medium."""
    from imager.devices.file import FileTarget

    backing = tmp_path / "medium.img"
    backing.write_bytes(bytes(16 * MiB))
    with loop_device(backing) as dev:
        target = FileTarget(dev)
        try:
            target.write(2048, b"\xaa" * 8192)
            target.flush()
            with open(backing, "r+b") as f:  # the medium changes behind the cache
                f.seek(2048 * 512)
                f.write(b"\x55" * 8192)
                f.flush()
                os.fsync(f.fileno())
            assert target.read(2048, 16) == b"\xaa" * 8192          # the cache is stale
            assert target.read_from_medium(2048, 16) == b"\x55" * 8192
            whole = target.read_from_medium(0, 12 * MiB // 512)  # longer than one 8 MiB piece
            assert whole == bytes(2048 * 512) + b"\x55" * 8192 + bytes(11 * MiB - 8192)
        finally:
            target.close()


def refuse_o_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every O_DIRECT open fail as a file system without O_DIRECT does (EINVAL)."""
    real_open = os.open

    def no_direct(p: object, flags: int, *a: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(p, flags, *a)

    monkeypatch.setattr(os, "open", no_direct)


def cached_bytes(path: Path) -> int:
    """What util-linux fincore says of a file's pages in the page cache."""
    need_tool("fincore")
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


@pytest.mark.parametrize("direct", [False, True])
def test_direct_writes_leave_nothing_in_the_page_cache(tmp_path: Path, direct: bool) -> None:
    from imager.devices.file import FileTarget

    path = tmp_path / "t.img"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)                  # a hole: nothing of it in the page cache
    assert cached_bytes(path) == 0
    payload = os.urandom(12 * MiB)            # longer than one 8 MiB O_DIRECT piece
    target = FileTarget(str(path))
    try:
        target.direct_writes = direct
        target.write(2048 + 8, payload)       # an odd 512-byte offset: fine for O_DIRECT here
        target.flush()
        assert target.read_from_medium(2048 + 8, len(payload) // 512) == payload
    finally:
        target.close()
    if direct:
        assert cached_bytes(path) == 0         # straight to the medium, no page-cache copy
    else:
        assert cached_bytes(path) >= len(payload) - 4096
    data = path.read_bytes()
    assert data[(2048 + 8) * 512:(2048 + 8) * 512 + len(payload)] == payload
    assert data[:(2048 + 8) * 512] == bytes((2048 + 8) * 512)


def test_o_direct_writes_and_read_back_fall_back_where_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imager.devices.file import FileTarget

    path = tmp_path / "t.img"
    path.write_bytes(bytes(MiB))
    refuse_o_direct(monkeypatch)
    target = FileTarget(str(path))
    try:
        target.direct_writes = True
        target.write(3, b"\x42" * 2048)
        target.flush()
        assert target.read_from_medium(3, 4) == b"\x42" * 2048
        assert target.read_from_medium(0, 3) == bytes(1536)
    finally:
        target.close()
    assert path.read_bytes()[3 * 512:3 * 512 + 2048] == b"\x42" * 2048


def test_parallel_hash_equals_the_tools_and_leaves_no_thread(tmp_path: Path) -> None:
    import threading

    from imager.hashing import ParallelHash

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 * MiB + 123))
    data = path.read_bytes()
    before = threading.active_count()
    with ParallelHash(("md5", "sha1", "sha256"), depth=2) as h:
        for i in range(0, len(data), 65536 + 7):   # many small pieces, in order
            h.update(data[i:i + 65536 + 7])
        got = h.hexdigests()
    assert got == {name: tool_hash(f"{name}sum", path) for name in ("md5", "sha1", "sha256")}
    with pytest.raises(RuntimeError), ParallelHash(("sha256",)) as h:
        h.update(b"x")
        raise RuntimeError("the caller fails half-way")
    assert threading.active_count() == before


@pytest.mark.parametrize("refused", ["", "open", "write"])
def test_direct_appender_writes_the_stream_exactly(tmp_path: Path, refused: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of odd sizes across the 8 MiB gather buffer, syncs at odd places, a restart in
    the middle of a block: the file is the concatenation, and little of it was cached. Where
    O_DIRECT is refused at open or only at the first write, the same bytes land."""
    import random

    from imager.directio import PIECE, DirectAppender

    if refused == "open":
        refuse_o_direct(monkeypatch)
    if refused == "write":
        def no_direct_write(*_a: object) -> int:
            raise OSError(22, "Invalid argument")

        monkeypatch.setattr(os, "pwritev", no_direct_write)
    rng = random.Random(3)
    path = tmp_path / "stream"
    pieces = [rng.randbytes(rng.choice((1, 511, 4096, 70001, 3 << 20, PIECE + 5)))
              for _ in range(12)]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    out = DirectAppender(fd, 0)
    for i, piece in enumerate(pieces[:8]):
        out.append(piece)
        if i in (2, 5):
            out.sync()
    out.sync()
    out.close()
    end = sum(map(len, pieces[:8]))
    assert os.fstat(fd).st_size == end and end % 4096  # the restart below is mid-block
    out = DirectAppender(fd, end)
    for piece in pieces[8:]:
        out.append(piece)
    want = bytearray(b"".join(pieces))
    # headers filled in later: in written blocks, in the buffer, and straddling the two
    for at in (0, 5000, out.base - 3, out.base + 7, out.end - 12):
        out.patch(at, b"PATCHED!" + at.to_bytes(4, "little"))
        want[at:at + 12] = b"PATCHED!" + at.to_bytes(4, "little")
    with pytest.raises(ValueError):
        out.patch(out.end - 4, b"too long")
    out.sync()
    out.close()
    os.close(fd)
    pieces = [bytes(want)]
    if not refused:
        assert cached_bytes(path) <= 4 * 4096  # at most the blocks of the synced tails
    assert path.read_bytes() == b"".join(pieces)
