"""The native image: concatenated zstd frames that stock ``zstd -d`` turns into the device bytes.

Layout (docs/FORMAT.md): one zstd frame per fixed-size LBA-aligned chunk (content checksum on),
then a skippable frame holding the manifest, then the seekable-format seek table as the last
frame. ZERO/FILL/UNREAD/NOT_ACQUIRED chunks are tiny RLE frames (formats.zstdframe).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import zstandard

from formats.errors import ChecksumMismatch, FormatError, InvalidField
from formats.extent import Extent, Kind
from formats.manifest import Manifest, parse_manifest
from formats.zstdframe import (
    SEEK_FOOTER_SIZE,
    SeekEntry,
    SeekTable,
    build_fill_frame,
    build_seek_table,
    build_skippable,
    frame_length,
    parse_frame_header,
    parse_seek_table,
    parse_skippable,
    seek_table_size,
)
from imager.directio import DirectAppender
from imager.durable import fsync_parent
from imager.errors import BadInput
from imager.image.base import Chunk
from imager.image.chunked import ChunkedRead, check_chunk
from imager.image.sidecar import MAX_MANIFEST
from imager.journal import KILL_ENV, maybe_kill

log = logging.getLogger(__name__)
MANIFEST_NIBBLE = 0x1
MANIFEST_TAG = b"IMGRMNFT"           # first 8 bytes of the manifest frame's user data
SEEK_TABLE_MAGIC = (0x184D2A5E).to_bytes(4, "little")


_fill_cache: dict[tuple[int, int], bytes] = {}
_fill_lock = threading.Lock()


def fill_frame(nbytes: int, fill: int) -> bytes:
    """The tiny RLE frame for ``nbytes`` copies of ``fill``, with its XXH64 content checksum."""
    key = (nbytes, fill)
    frame = _fill_cache.get(key)
    if frame is None:
        # zstd computes XXH64 for us; compressing a constant buffer takes microseconds per MiB
        probe = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(
            bytes([fill]) * nbytes)
        frame = build_fill_frame(nbytes, fill, int.from_bytes(probe[-4:], "little"))
        with _fill_lock:
            if len(_fill_cache) > 64:
                _fill_cache.clear()
            _fill_cache[key] = frame
    return frame


class NativeSink:
    """Writes the native image; ``encode`` is thread-safe so a worker pool can compress.

    Create with ``NativeSink(path, sector_size=, sector_count=, chunk_sectors=, level=)``;
    ``NativeSink.reopen(path, offset, ...)`` continues an interrupted image.
    """

    image_format = "native"

    def __init__(self, path: str, *, sector_size: int, sector_count: int, chunk_sectors: int,
                 level: int = 3, _fd: int | None = None) -> None:
        self.path, self.sector_size = path, sector_size
        self.sector_count, self.chunk_sectors, self.level = sector_count, chunk_sectors, level
        self.entries: list[SeekEntry] = []
        self._local = threading.local()
        if _fd is None:
            _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            fsync_parent(path)
        self.fd = _fd
        self.offset = os.lseek(self.fd, 0, os.SEEK_END)
        self.frames_end = self.offset  # end of the last complete frame: what a journal may cite
        self.out = DirectAppender(self.fd, self.offset)  # no page-cache copy of the image

    @classmethod
    def reopen(cls, path: str, offset: int, **kw: Any) -> NativeSink:
        """Continue an image whose committed frames end at ``offset``; the torn tail is cut.

        Call ``replay()`` next: it re-reads the committed frames (rebuilding the seek table).

        Raises:
            BadInput: the file is shorter than the journal says.
        """
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        if size < offset:
            os.close(fd)
            raise BadInput(f"{path}: {size} bytes, but the journal says {offset} are committed")
        os.ftruncate(fd, offset)
        os.fsync(fd)
        return cls(path, _fd=fd, **kw)

    def replay(self) -> Iterator[bytes]:
        """The content of every committed chunk, in order, found by scanning the frames.

        Raises:
            BadInput: a frame does not scan (the file is not what the journal describes).
            ChecksumMismatch: a frame fails to decompress or its content checksum.
        """
        self.entries.clear()
        dctx = zstandard.ZstdDecompressor()
        for entry, frame in scan_frames(self.fd, self.frames_end, self.chunk_bytes):
            index = len(self.entries)
            want = min(self.chunk_sectors, self.sector_count - index * self.chunk_sectors)
            try:
                data = dctx.decompress(frame, max_output_size=self.chunk_bytes)
            except zstandard.ZstdError as err:
                raise ChecksumMismatch("zstd frame", chunk=index, expected="a valid frame",
                                       actual=str(err)) from err
            if len(data) != want * self.sector_size:
                raise BadInput(f"{self.path}: chunk {index} holds {len(data)} bytes, "
                               f"expected {want * self.sector_size}")
            self.entries.append(entry)
            yield data

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_sectors * self.sector_size

    def encode(self, extent: Extent, data: bytes | memoryview | None,
               check: str | None = None) -> bytes:
        """The frame for one chunk (thread-safe: one compressor per thread); ``check`` unused."""
        nbytes = extent.count * self.sector_size
        if extent.kind is Kind.DATA:
            cctx = getattr(self._local, "cctx", None)
            if cctx is None:
                cctx = self._local.cctx = zstandard.ZstdCompressor(
                    level=self.level, write_checksum=True)
            return cctx.compress(data)
        return fill_frame(nbytes, extent.fill or 0)

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store one chunk (compressing in the caller's thread)."""
        self.write_encoded(extent, self.encode(extent, data))

    def write_encoded(self, extent: Extent, frame: bytes) -> None:
        """Append a frame made by ``encode``."""
        index = len(self.entries)
        if extent.start_lba != index * self.chunk_sectors:
            raise ValueError(f"chunk {index} must start at LBA {index * self.chunk_sectors}, "
                             f"got {extent.start_lba}")
        if os.environ.get(KILL_ENV) == f"torn:{index}":  # test hook: a half-written frame
            self._write_all(frame[: len(frame) // 2])
            self.out.sync()
            maybe_kill("torn", index)
        if self.offset != self.frames_end:  # a failed write left a partial frame: cut it
            self.out.close()
            os.ftruncate(self.fd, self.frames_end)
            self.offset = self.frames_end
            self.out = DirectAppender(self.fd, self.offset)
        self._write_all(frame)
        self.frames_end = self.offset
        self.entries.append(SeekEntry(len(frame), extent.count * self.sector_size,
                                      int.from_bytes(frame[-4:], "little")))

    def _write_all(self, data: bytes) -> None:
        self.out.append(data)
        self.offset += len(data)

    def checkpoint(self) -> dict[str, Any]:
        """Everything appended durable (written out, fsynced); the state a journal records."""
        self.out.sync()
        return {"offset": self.frames_end, "chunks": len(self.entries)}

    def finalize(self, manifest: Manifest) -> None:
        """Append the manifest frame and the seek table, fsync and close."""
        self._write_all(build_skippable(MANIFEST_TAG + manifest.to_json(), MANIFEST_NIBBLE))
        maybe_kill("finalize", 1)
        self._write_all(build_seek_table(self.entries, with_checksums=True))
        self.out.sync()
        maybe_kill("finalize", 2)
        self.close()

    def close(self) -> None:
        """Close the file; what was appended is handed to the kernel first (not fsynced)."""
        if self.fd >= 0:
            try:
                self.out.flush()
            except OSError as err:  # closing after a failed write: the journal decides anyway
                log.warning("%s: could not write the last frames out: %s", self.path, err)
        self.out.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def scan_frames(fd: int, end: int, chunk_bytes: int) -> Iterator[tuple[SeekEntry, bytes]]:
    """Walk the zstd frames in ``[0, end)`` of a file without a seek table.

    Yields (seek entry, frame bytes). Raises BadInput at the first byte that is not a
    complete frame (a torn or foreign tail).
    """
    limit = chunk_bytes + chunk_bytes // 1024 + 4096  # worst-case frame: raw blocks
    offset = 0
    while offset < end:
        buf = os.pread(fd, min(limit, end - offset), offset)
        try:
            n = frame_length(buf)
            header = parse_frame_header(buf)
        except FormatError as err:
            raise BadInput(f"scan: no zstd frame at byte {offset}: {err}") from err
        if n is None or not header.has_checksum or header.content_size is None:
            raise BadInput(f"scan: incomplete or foreign frame at byte {offset}")
        frame = buf[:n]
        yield SeekEntry(n, header.content_size, int.from_bytes(frame[-4:], "little")), frame
        offset += n


class NativeReader(ChunkedRead):
    """Random access to a native image through its seek table; every chunk read is verified.

    Opening checks the footer, the seek table against the manifest (frame count, sizes, where
    the manifest frame sits) and the manifest's own checksum.

    Raises (on open):
        BadInput: not a complete native image (e.g. the footer is missing: interrupted).
        formats.errors.FormatError: a damaged seek table or manifest (ChecksumMismatch for
            a manifest whose checksum does not match).
    """

    # read_chunk may run in several threads at once (pread, one decompressor per thread)
    concurrent_read_chunk = True

    def __init__(self, path: str, **_options: Any) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise BadInput(f"{path}: cannot open: {err.strerror}") from err
        self._local = threading.local()
        self._cache: tuple[int, bytes] | None = None
        try:
            self._open(os.fstat(self.fd).st_size)
        except BaseException:
            self.close()
            raise

    def _open(self, size: int) -> None:
        footer = os.pread(self.fd, SEEK_FOOTER_SIZE, max(size - SEEK_FOOTER_SIZE, 0))
        try:
            table_size = seek_table_size(footer)
        except FormatError as err:
            raise BadInput(f"{self.path}: no seek table at the end ({err}): the image is "
                           "incomplete; if its acquisition was interrupted, run the same "
                           "command again to resume it") from err
        if table_size > size:
            raise BadInput(f"{self.path}: seek table of {table_size} bytes in a {size}-byte file")
        raw = os.pread(self.fd, table_size, size - table_size)
        self.table: SeekTable = parse_seek_table(raw)
        # our writer sets exactly these; anything else is damage (the spec lets readers ignore)
        if raw[:4] != SEEK_TABLE_MAGIC or raw[-5] != 0x80:
            raise InvalidField("seek table", "magic/descriptor", raw[:4].hex() + f"/{raw[-5]:#x}",
                               f"native images use {SEEK_TABLE_MAGIC.hex()}/0x80")
        self.offsets = [0]
        for entry in self.table.entries:
            self.offsets.append(self.offsets[-1] + entry.compressed_size)
        self.manifest = self._read_manifest(self.offsets[-1], size - table_size)
        self._check_layout()

    def _read_manifest(self, start: int, end: int) -> Manifest:
        length = end - start
        if not 8 + len(MANIFEST_TAG) < length <= MAX_MANIFEST:
            raise InvalidField("native image", "manifest frame size", length,
                               f"frames end at byte {start}, seek table starts at {end}")
        frame = parse_skippable(os.pread(self.fd, length, start))
        if frame.size != length or frame.nibble != MANIFEST_NIBBLE \
                or not frame.data.startswith(MANIFEST_TAG):
            raise InvalidField("native image", "manifest frame", start,
                               "not the manifest skippable frame the seek table points to")
        return parse_manifest(frame.data[len(MANIFEST_TAG):])

    def _check_layout(self) -> None:
        m = self.manifest
        if len(self.table.entries) != m.chunk_count or not self.table.has_checksums:
            raise InvalidField("native image", "seek table", len(self.table.entries),
                               f"manifest has {m.chunk_count} chunks (checksums required)")
        for index, entry in enumerate(self.table.entries):
            want = m.chunk_extent(index).count * m.sector_size
            if entry.decompressed_size != want:
                raise InvalidField("seek table", f"entry {index} size", entry.decompressed_size,
                                   f"chunk holds {want} bytes")
        self.sector_size, self.sector_count = m.sector_size, m.sector_count
        self.chunk_sectors = m.chunk_sectors
        self._chunks = [Chunk(i, ext, check) for i, ext, check in m.iter_chunks()]

    @property
    def hashes(self) -> dict[str, str]:
        """Whole-image hashes recorded at acquisition (algorithm -> hex)."""
        return dict(self.manifest.hashes)

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in LBA order."""
        return iter(self._chunks)

    def extents(self) -> list[Extent]:
        """Sector-precise map: chunk kinds with UNREAD / NOT_ACQUIRED ranges laid over."""
        return self.manifest.extents()

    def frame(self, index: int) -> bytes:
        """The raw zstd frame of chunk ``index`` (for copying without recompressing)."""
        entry = self.table.entries[index]
        data = os.pread(self.fd, entry.compressed_size, self.offsets[index])
        if len(data) != entry.compressed_size:
            raise ChecksumMismatch("chunk frame length", chunk=index, expected=str(
                entry.compressed_size), actual=str(len(data)))
        return data

    def read_chunk(self, chunk: Chunk) -> bytes:
        """Decompress and verify one chunk.

        Raises:
            ChecksumMismatch: the frame is damaged or its bytes do not match the check value.
        """
        index, ext = chunk.index, chunk.extent
        frame = self.frame(index)
        stored = int.from_bytes(frame[-4:], "little")
        if stored != self.table.entries[index].checksum:
            raise ChecksumMismatch("frame checksum vs seek table", lba=ext.start_lba, chunk=index,
                                   expected=self.table.entries[index].checksum, actual=stored)
        data = self._decompress(frame, index, ext)
        check_chunk(self.manifest.chunk_check, chunk, data)
        return data

    def _decompress(self, frame: bytes, index: int, ext: Extent) -> bytes:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        want = ext.count * self.sector_size
        try:
            data = dctx.decompress(frame, max_output_size=want)
        except zstandard.ZstdError as err:
            raise ChecksumMismatch("zstd frame", lba=ext.start_lba, chunk=index,
                                   expected="a valid frame", actual=str(err)) from err
        if len(data) != want:
            raise ChecksumMismatch("zstd frame size", lba=ext.start_lba, chunk=index,
                                   expected=str(want), actual=str(len(data)))
        return data

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1
