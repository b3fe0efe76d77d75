"""EwfSink: the acquire pipeline's output as an EnCase 6 style E01 segment set.

Layout (as ewfacquire -f encase6 writes it, ../shared/specs/ewf-e01.md):
  E01 (single): header2 header2 header volume [sectors table table2]+ data [error2] digest hash done
  E01 (first):  header2 header2 header volume [sectors table table2]+ next
  E0n (middle): data [sectors table table2]+ next
  E0n (last):   data [sectors table table2]+ [error2] digest hash done
The EWF chunk (sectors_per_chunk x bytes_per_sector, 32 KiB by default) is independent of the
pipeline's chunk size: extents are buffered here. Sectors that were not read (UNREAD) or not
acquired (NOT_ACQUIRED) are stored as zeros, as EnCase does; UNREAD ranges go to error2 and
both kinds are kept in ``unread`` / ``not_acquired`` for the manifest and report. The stored
MD5/SHA-1 cover exactly the stored media bytes, so ewfverify can check them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, BinaryIO

from formats import ewf, ewf_chunk
from formats.ewf_header import build_header, build_header2
from formats.extent import Extent, Kind
from imager.errors import UsageError
from imager.image.ewf_set import header_values, merge_overlapping, segment_base
from imager.image.sidecar import save_sidecar, sidecar_path

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 1_503_238_553          # ewfacquire's default, 1.4 GiB
MIN_SEGMENT_SIZE = 1 << 20                    # ewfacquire's minimum
MAX_SEGMENT_SIZE = (1 << 63) - 1
COMPRESSION = {"none": ewf.LEVEL_NONE, "fast": ewf.LEVEL_FAST, "best": ewf.LEVEL_BEST}
# Bytes kept free at the end of every segment for its closing sections (data + error2 +
# digest + hash + done); error2 grows with the number of bad ranges and is added on top.
TAIL_RESERVE = 3 * ewf.DESCRIPTOR_SIZE + ewf.VOLUME_SIZE + ewf.DIGEST_SIZE + ewf.HASH_SIZE \
    + 2 * ewf.DESCRIPTOR_SIZE + ewf.ERROR2_HEADER_SIZE + 8
@lru_cache(maxsize=16)
def _uniform_plain(byte: int, size: int) -> bytes:
    return bytes([byte]) * size


class EwfSink:
    """Writes an E01 segment set; implements imager.image.base.Sink.

    Args:
        path: OUT or OUT.E01; segments are OUT.E01, OUT.E02, ... (E99, EAA, ...).
        sector_size, sector_count: of the source (the volume section needs both up front).
        case: case metadata (case_number, evidence_number, examiner, description, notes).
        identity: the source Identity (model and serial go into header2).
        segment_size: maximum bytes per segment file (the closing sections of a segment with
            thousands of error2 entries may exceed it by their size).
        compression: "none" (empty-block only), "fast" or "best".
        overwrite: replace an existing set (its extra segments are removed).
        chunk_sectors: the acquire pipeline's chunk (a multiple of ``sectors_per_chunk``);
            checkpoint()["chunks"] counts the pipeline chunks that are durable.
    """

    image_format = "e01"

    def __init__(self, path: str, *, sector_size: int, sector_count: int,
                 case: Mapping[str, str] | None = None, identity: Any = None,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, sectors_per_chunk: int = 64,
                 compression: str = "fast", overwrite: bool = False,
                 acquired: int | None = None, chunk_sectors: int | None = None,
                 _resume: bool = False) -> None:
        self._check_args(segment_size, sectors_per_chunk, compression, sector_size)
        if chunk_sectors and chunk_sectors % sectors_per_chunk:
            raise UsageError(f"E01: the chunk size ({chunk_sectors} sectors) must hold whole "
                             f"EWF chunks of {sectors_per_chunk} sectors (e.g. the default 4MiB)")
        self.chunk_sectors = chunk_sectors   # the pipeline's chunk: checkpoints count those
        self.base = segment_base(path)
        self.sector_size, self.sector_count = sector_size, sector_count
        self.chunk_bytes = sectors_per_chunk * sector_size
        self.level = COMPRESSION[compression]
        self.segment_size = segment_size
        self.volume = ewf.Volume(
            chunk_count=-(-sector_count // sectors_per_chunk), sectors_per_chunk=sectors_per_chunk,
            bytes_per_sector=sector_size, sector_count=sector_count,
            compression_level=self.level, error_granularity=sectors_per_chunk,
            set_guid=uuid.uuid4().bytes_le)
        self.header = header_values(case or {}, identity, acquired)
        self.segments: list[str] = []
        self.unread: list[Extent] = []
        self.not_acquired: list[Extent] = []
        self.md5_hex = self.sha1_hex = ""
        self._md5, self._sha1 = hashlib.md5(), hashlib.sha1()
        self._buf = bytearray()
        self._next_lba = 0           # first LBA not yet given to write()
        self._chunks = 0             # EWF chunks stored
        self._file: BinaryIO | None = None
        self._pos = 0
        self._sectors_at: int | None = None
        self._entries: list[int] = []
        self._finished = False
        self._closed_bytes = 0       # sizes of the finished segments (checkpoint offsets)
        self._segment_has_chunks = False
        if not _resume:
            self._prepare_names(overwrite)
            self._open_segment()

    @classmethod
    def reopen(cls, path: str, offset: int, **kw: Any) -> EwfSink:
        """Continue an interrupted set whose committed bytes end at ``offset`` (a checkpoint's
        "offset": all segments before the open one plus the open one's committed part).
        Call ``replay()`` next. See imager.image.ewf_resume."""
        from imager.image.ewf_resume import reopen

        return reopen(cls, path, offset, **kw)

    def replay(self) -> Iterator[bytes]:
        """The committed data again, in pipeline chunks, every EWF chunk checked; rebuilds
        the MD5/SHA-1 state. Nothing for a fresh set."""
        from imager.image.ewf_resume import replay

        return replay(self)

    @staticmethod
    def _check_args(segment_size: int, spc: int, compression: str, sector_size: int) -> None:
        if compression not in COMPRESSION:
            raise UsageError(f"E01 compression {compression!r}: choose none, fast or best")
        if spc < 1 or spc & (spc - 1) or spc > 32768:
            raise UsageError(f"E01 sectors per chunk {spc}: a power of two up to 32768")
        need = max(MIN_SEGMENT_SIZE, 4 * (spc * sector_size + 4))
        if not need <= segment_size <= MAX_SEGMENT_SIZE:
            bound = f"at least {need}" if segment_size < need else f"at most {MAX_SEGMENT_SIZE}"
            raise UsageError(f"--segment-size {segment_size}: must be {bound} bytes")

    # -- Sink protocol -----------------------------------------------------------------------

    def write(self, extent: Extent, data: bytes | memoryview | None) -> None:
        """Store ``extent`` (in LBA order): its bytes for DATA, synthesised for the rest."""
        if extent.start_lba < self._next_lba or extent.end_lba > self.sector_count:
            raise ValueError(f"E01 sink: extent {extent.start_lba}+{extent.count} out of order "
                             f"or outside 0..{self.sector_count} (next LBA {self._next_lba})")
        if extent.start_lba > self._next_lba:   # a gap is recorded, never silently zero
            log.warning("E01 sink: LBA %d..%d never written; stored as not acquired",
                        self._next_lba, extent.start_lba - 1)
            self.write(Extent(self._next_lba, extent.start_lba - self._next_lba,
                              Kind.NOT_ACQUIRED), None)
        size = extent.count * self.sector_size
        if data is not None:
            if len(data) != size:
                raise ValueError(f"E01 sink: {len(data)} bytes for {extent.count} sectors at "
                                 f"LBA {extent.start_lba} (expected {size})")
            self._feed(memoryview(data).cast("B"))
        else:
            self._record(extent)
            self._feed_uniform(extent.fill if extent.kind is Kind.FILL else 0, size)
        self._advance(extent.end_lba)

    def _advance(self, lba: int) -> None:
        """Past the last sector nothing more comes: store the short last chunk right away,
        so a checkpoint covers the whole media."""
        self._next_lba = lba
        if lba == self.sector_count and self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()

    def encode(self, extent: Extent, data: bytes | memoryview | None,
               check: str | None = None) -> Any:
        """Compress a DATA extent's EWF chunks ahead, in a pipeline worker (thread-safe).

        Only for extents that start on an EWF chunk and hold whole chunks (or end the media);
        anything else returns None and write() handles it.
        """
        size = self.chunk_bytes
        if data is None or (extent.start_lba * self.sector_size) % size:
            return None
        view = memoryview(data).cast("B")
        if len(view) % size and extent.end_lba != self.sector_count:
            return None
        return data, [ewf_chunk.encode_chunk(view[o:o + size], self.level)
                      for o in range(0, len(view), size)]

    def write_encoded(self, extent: Extent, encoded: Any) -> None:
        """Store what encode() made (falls back to write() if the stream is not aligned)."""
        data, pieces = encoded
        if self._buf or extent.start_lba != self._next_lba:
            self.write(extent, data)
            return
        self._md5.update(data)
        self._sha1.update(data)
        for stored, compressed in pieces:
            self._store(stored, compressed)
        self._advance(extent.end_lba)

    def checkpoint(self) -> dict[str, Any]:
        """Flush and fsync the current segment; the state says how far the E01 is durable."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        durable = min(self._chunks * self.volume.sectors_per_chunk, self.sector_count)
        per = self.chunk_sectors or self.volume.sectors_per_chunk
        complete = -(-durable // per) if durable == self.sector_count else durable // per
        return {"format": "e01", "segment": len(self.segments),
                "offset": self._closed_bytes + self._pos, "ewf_chunks": self._chunks,
                "durable_lba": durable, "chunks": complete}

    def finalize(self, manifest: Any = None) -> None:
        """Store the last (short) chunk, then error2, digest, hash and done; close the set.

        ``manifest.unread`` / ``manifest.not_acquired`` (LBA ranges) join the ranges seen in
        write(): the pipeline reports unreadable sectors inside a DATA chunk only there. The
        manifest is also saved beside the set as ``<first segment>.manifest.json``.
        """
        if self._finished:
            return
        for ranges, kind in ((getattr(manifest, "unread", ()), Kind.UNREAD),
                             (getattr(manifest, "not_acquired", ()), Kind.NOT_ACQUIRED)):
            self._merge_ranges(ranges, kind)
        if self._next_lba < self.sector_count:
            log.warning("E01 sink: LBA %d..%d never written; stored as not acquired",
                        self._next_lba, self.sector_count - 1)
            self.write(Extent(self._next_lba, self.sector_count - self._next_lba,
                              Kind.NOT_ACQUIRED), None)
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()
        self.md5_hex, self.sha1_hex = self._md5.hexdigest(), self._sha1.hexdigest()
        self._close_segment(last=True)
        self._finished = True
        self._compare(manifest)
        if manifest is not None and hasattr(manifest, "to_json"):
            save_sidecar(self.path, manifest)

    @property
    def manifest_path(self) -> str:
        """Where finalize() saves the manifest (E01 has no place for it inside)."""
        return sidecar_path(self.path)

    def _merge_ranges(self, ranges: Any, kind: Kind) -> None:
        target = self.unread if kind is Kind.UNREAD else self.not_acquired
        extents = target + [Extent(int(s), int(c), kind) for s, c in ranges]
        target[:] = merge_overlapping(extents)

    def abort(self) -> None:
        """Close the current segment file without finishing the set (it stays incomplete)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def path(self) -> str:
        """The first segment file."""
        return self._segment_path(1)

    # -- chunking ------------------------------------------------------------------------------

    def _record(self, extent: Extent) -> None:
        target = {Kind.UNREAD: self.unread, Kind.NOT_ACQUIRED: self.not_acquired}.get(extent.kind)
        if target is None:
            return
        if target and target[-1].end_lba == extent.start_lba:
            last = target.pop()
            extent = Extent(last.start_lba, last.count + extent.count, extent.kind)
        target.append(extent)

    def _feed(self, view: memoryview) -> None:
        pos = 0
        if self._buf:
            pos = min(len(view), self.chunk_bytes - len(self._buf))
            self._buf += view[:pos]
            if len(self._buf) == self.chunk_bytes:
                self._emit(bytes(self._buf))
                self._buf.clear()
        while len(view) - pos >= self.chunk_bytes:
            self._emit(view[pos:pos + self.chunk_bytes])
            pos += self.chunk_bytes
        self._buf += view[pos:]

    def _feed_uniform(self, byte: int, size: int) -> None:
        """Synthesised extents go chunk by chunk: a zero-filled 64 GiB gap costs no memory."""
        if self._buf:
            take = min(size, self.chunk_bytes - len(self._buf))
            self._feed(memoryview(_uniform_plain(byte, take)))
            size -= take
        whole, rest = divmod(size, self.chunk_bytes)
        plain = _uniform_plain(byte, self.chunk_bytes) if whole else b""
        stored = ewf_chunk.uniform_chunk(byte, self.chunk_bytes) if whole else b""
        for _ in range(whole):
            self._md5.update(plain)
            self._sha1.update(plain)
            self._store(stored, True)
        if rest:
            self._buf += _uniform_plain(byte, rest)

    def _emit(self, chunk: bytes | memoryview) -> None:
        self._md5.update(chunk)
        self._sha1.update(chunk)
        stored, compressed = ewf_chunk.encode_chunk(chunk, self.level)
        self._store(stored, compressed)

    # -- sections -------------------------------------------------------------------------------

    def _store(self, stored: bytes, compressed: bool) -> None:
        table_after = 2 * (ewf.DESCRIPTOR_SIZE + ewf.TABLE_HEADER_SIZE + 8
                           + 4 * (len(self._entries) + 1))
        tail = TAIL_RESERVE + 8 * len(self.unread)
        fresh_section = (ewf.DESCRIPTOR_SIZE if self._sectors_at is None else 0)
        if self._pos + fresh_section + len(stored) + table_after + tail > self.segment_size \
                and self._segment_has_chunks:
            self._close_segment(last=False)
            self._open_segment()
        elif self._sectors_at is not None and (
                len(self._entries) >= ewf.MAX_TABLE_ENTRIES
                or self._pos + len(stored) - self._sectors_at > ewf.OFFSET_MASK):
            self._close_sectors()
        if self._sectors_at is None:
            self._sectors_at = self._pos
            self._put(bytes(ewf.DESCRIPTOR_SIZE))   # rewritten when the section closes
        self._entries.append(ewf.table_entry(self._pos - self._sectors_at, compressed))
        self._put(stored)
        self._chunks += 1
        self._segment_has_chunks = True

    def _put(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.write(data)
        self._pos += len(data)

    def _section(self, kind: str, payload: bytes) -> None:
        size = ewf.DESCRIPTOR_SIZE + len(payload)
        self._put(ewf.build_section_descriptor(
            ewf.SectionDescriptor(kind, self._pos + size, size)) + payload)

    def _close_sectors(self) -> None:
        if self._sectors_at is None:
            return
        assert self._file is not None
        desc = ewf.SectionDescriptor("sectors", self._pos, self._pos - self._sectors_at)
        self._file.seek(self._sectors_at)
        self._file.write(ewf.build_section_descriptor(desc))
        self._file.seek(self._pos)
        table = ewf.build_table(ewf.Table(self._sectors_at, tuple(self._entries)))
        self._section("table", table)
        self._section("table2", table)
        self._sectors_at, self._entries = None, []

    def _segment_path(self, number: int) -> str:
        return f"{self.base}.{ewf.segment_extension(number)}"

    def _prepare_names(self, overwrite: bool) -> None:
        number, stale = 1, []
        while os.path.exists(self._segment_path(number)):
            stale.append(self._segment_path(number))
            number += 1
        if stale and not overwrite:
            raise UsageError(f"{stale[0]} already exists (remove it or choose another name)")
        for name in stale:
            os.unlink(name)

    def _open_segment(self) -> None:
        number = len(self.segments) + 1
        path = self._segment_path(number)
        self._file = open(path, "xb")  # noqa: SIM115  (kept open across write() calls)
        self.segments.append(path)
        self._pos, self._segment_has_chunks = 0, False
        self._put(ewf.build_file_header(ewf.FileHeader(number)))
        if number == 1:
            self._section("header2", build_header2(self.header))
            self._section("header2", build_header2(self.header))
            self._section("header", build_header(self.header))
            self._section("volume", ewf.build_volume(self.volume))
        else:
            self._section("data", ewf.build_volume(self.volume))

    def _close_segment(self, last: bool) -> None:
        self._close_sectors()
        if last:
            self._write_trailer()
        self._put(ewf.build_section_descriptor(
            ewf.SectionDescriptor("done" if last else "next", self._pos, 0)))
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._closed_bytes += self._pos

    def _write_trailer(self) -> None:
        if len(self.segments) == 1:
            self._section("data", ewf.build_volume(self.volume))
        if self.unread:
            entries = tuple((e.start_lba, e.count) for e in self.unread)
            self._section("error2", ewf.build_error2(ewf.Error2(entries)))
        md5, sha1 = bytes.fromhex(self.md5_hex), bytes.fromhex(self.sha1_hex)
        self._section("digest", ewf.build_digest(ewf.Digest(md5, sha1)))
        self._section("hash", ewf.build_hash(ewf.HashSection(md5)))

    def _compare(self, manifest: Any) -> None:
        hashes = getattr(manifest, "hashes", None) or {}
        for name, mine in (("md5", self.md5_hex), ("sha1", self.sha1_hex)):
            theirs = hashes.get(name)
            if theirs and theirs != mine:
                log.warning("E01 %s %s differs from the manifest's %s (unread sectors are "
                            "stored as zeros in E01)", name, mine, theirs)
