"""E01 (EWF) segment sets: EwfReader (an ImageReader) and, re-exported, EwfSink.

The reader opens sets made by us, ewfacquire, EnCase or FTK (EWF-E01, EnCase 2-7 layout with
sectors/table sections). Every chunk read is checked: the Adler-32 suffix of an uncompressed
chunk, zlib's own Adler-32 trailer of a compressed one. Memory is bounded: the tables keep 4
bytes per chunk; section payloads and decompression are capped; nothing trusts a size field
before checking it against the file.
"""

from __future__ import annotations

import bisect
import logging
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from formats import ewf, ewf_chunk
from formats.errors import ChecksumMismatch, FormatError, InvalidField, Truncated
from formats.ewf_header import HeaderValues, parse_header, parse_header2
from formats.extent import Extent, Kind
from formats.manifest import Manifest
from imager.errors import BadInput, OutOfBounds
from imager.image.base import Chunk
from imager.image.ewf_set import segment_base  # noqa: F401
from imager.image.ewf_writer import EwfSink  # noqa: F401  (re-exported)
from imager.image.sidecar import load_sidecar

log = logging.getLogger(__name__)

MAX_TEXT_SECTION = 16 << 20
MAX_TABLE_ENTRIES = 1 << 22            # far above any writer's limit (EnCase 6: 65534)
MAX_ERROR_ENTRIES = 1 << 20


@dataclass
class _Table:
    segment: int
    first_chunk: int
    base: int
    data_end: int          # end of the sectors section the entries point into
    entries: array


def find_segments(path: str) -> list[str]:
    """Every segment file of the set ``path`` belongs to, in order (E01, E02, ...).

    Raises:
        BadInput: ``path`` cannot be opened.
        FormatError: not an EWF file.
    """
    first = _segment_header(path)
    root, ext = os.path.splitext(path)
    try:
        number = ewf.segment_number(ext[1:])
    except FormatError:
        number = -1
    if number != first.segment_number:   # renamed or oddly named: a set of one
        if first.segment_number != 1:
            raise InvalidField(path, "segment number", first.segment_number,
                               "the file is not named like segment of its set")
        return [path]
    letter = ext[1]
    paths = []
    for n in range(1, 14972):
        candidates = [f"{root}.{ewf.segment_extension(n, c)}" for c in (letter, letter.swapcase())]
        found = next((c for c in candidates if os.path.exists(c)), None)
        if found is None:
            break
        paths.append(found)
    if not paths:
        raise FormatError(f"{path}: segment {first.segment_number} of a set whose first "
                          f"segment {root}.{ewf.segment_extension(1, letter)} is missing")
    return paths


def _segment_header(path: str) -> ewf.FileHeader:
    try:
        with open(path, "rb") as f:
            return ewf.parse_file_header(f.read(ewf.FILE_HEADER_SIZE))
    except OSError as err:
        raise BadInput(f"{path}: cannot open: {err.strerror}") from err


class EwfReader:
    """An E01 segment set as an ImageReader (``path`` may name any of its segments)."""

    def __init__(self, path: str, **_options: object) -> None:
        self.path = path
        self.segments = find_segments(path)
        self._fds: list[int] = []
        self._sizes: list[int] = []
        self._tables: list[_Table] = []
        self._firsts: list[int] = []
        self.header: HeaderValues | None = None
        self.volume: ewf.Volume | None = None
        self.md5: str | None = None
        self.sha1: str | None = None
        self.error_ranges: tuple[tuple[int, int], ...] = ()
        self._cache: tuple[int, bytes] | None = None
        self.manifest: Manifest | None = None
        try:
            self._load()
            self.manifest = load_sidecar(self.segments[0])
        except BaseException:
            self.close()
            raise

    # -- ImageReader --------------------------------------------------------------------------

    @property
    def sector_size(self) -> int:
        assert self.volume is not None
        return self.volume.bytes_per_sector

    @property
    def sector_count(self) -> int:
        assert self.volume is not None
        return self.volume.sector_count

    @property
    def chunk_sectors(self) -> int:
        assert self.volume is not None
        return self.volume.sectors_per_chunk

    @property
    def chunk_count(self) -> int:
        assert self.volume is not None
        return self.volume.chunk_count

    @property
    def hashes(self) -> dict[str, str]:
        """Whole-image hashes: the manifest's (if saved beside), the E01's MD5/SHA-1 over them."""
        out = dict(self.manifest.hashes) if self.manifest is not None else {}
        out.update({k: v for k, v in (("md5", self.md5), ("sha1", self.sha1)) if v})
        return out

    def extents(self) -> list[Extent]:
        """Sector map: the manifest's when saved beside, else DATA with error2 ranges UNREAD."""
        if self.manifest is not None:
            return self.manifest.extents()
        out, pos = [], 0
        for start, count in sorted(self.error_ranges):
            start, end = max(start, pos), min(start + count, self.sector_count)
            if end <= start:
                continue
            if start > pos:
                out.append(Extent(pos, start - pos))
            out.append(Extent(start, end - start, Kind.UNREAD))
            pos = end
        if pos < self.sector_count:
            out.append(Extent(pos, self.sector_count - pos))
        return out

    @property
    def unread(self) -> list[Extent]:
        """The sectors the acquiring tool could not read (error2), stored as zeros."""
        return [Extent(s, c, Kind.UNREAD) for s, c in self.error_ranges]

    def chunks(self) -> Iterator[Chunk]:
        """Every EWF chunk in LBA order; ``check`` is its stored Adler-32."""
        for index in range(self.chunk_count):
            fd, start, end, compressed = self._locate(index)
            size = self._chunk_size(index)
            at = end - 4 if compressed else start + size
            tail = os.pread(fd, 4, at)
            value = int.from_bytes(tail, "big" if compressed else "little")
            start_lba = index * self.chunk_sectors
            yield Chunk(index, Extent(start_lba, size // self.sector_size, Kind.DATA),
                        f"adler32:{value:08x}")

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes after checking its Adler-32 (and ``chunk.check`` if given)."""
        data, stored = self._decode(chunk.index)
        if chunk.check is not None and chunk.check != f"adler32:{stored:08x}":
            raise ewf_mismatch(chunk, stored)
        return data

    def read(self, lba: int, count: int) -> bytes:
        """``count`` sectors from ``lba``, every chunk touched checked."""
        if lba < 0 or count < 0 or lba + count > self.sector_count:
            raise OutOfBounds(lba, count, self.sector_count)
        ss, per = self.sector_size, self.chunk_sectors
        out = bytearray()
        pos = lba
        while pos < lba + count:
            index = pos // per
            data = self._cached(index)
            lo = (pos - index * per) * ss
            take = min(lba + count - pos, per - (pos - index * per))
            out += data[lo:lo + take * ss]
            pos += take
        return bytes(out)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    # -- chunks ---------------------------------------------------------------------------------

    def _chunk_size(self, index: int) -> int:
        per = self.chunk_sectors
        return min(per, self.sector_count - index * per) * self.sector_size

    def _locate(self, index: int) -> tuple[int, int, int, bool]:
        """(fd, start, end, compressed) of chunk ``index`` in its segment file."""
        if not 0 <= index < self.chunk_count:
            raise IndexError(f"E01 chunk {index} outside 0..{self.chunk_count - 1}")
        table = self._tables[bisect.bisect_right(self._firsts, index) - 1]
        j = index - table.first_chunk
        entry = table.entries[j]
        start = table.base + (entry & ewf.OFFSET_MASK)
        end = table.base + (table.entries[j + 1] & ewf.OFFSET_MASK) \
            if j + 1 < len(table.entries) else table.data_end
        limit = self._max_stored
        if not start < end <= self._sizes[table.segment] or end - start > limit:
            raise InvalidField(f"{self.segments[table.segment]}: chunk {index}", "location",
                               (start, end), f"not inside the file or longer than {limit}")
        return self._fds[table.segment], start, end, bool(entry & ewf.COMPRESSED_FLAG)

    def _decode(self, index: int) -> tuple[bytes, int]:
        fd, start, end, compressed = self._locate(index)
        stored = os.pread(fd, end - start, start)
        if len(stored) != end - start:
            raise Truncated(f"E01 chunk {index}", end - start, len(stored))
        return ewf_chunk.decode_chunk(stored, compressed, self._chunk_size(index), index)

    def _cached(self, index: int) -> bytes:
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, self._decode(index)[0])
        return self._cache[1]

    # -- loading --------------------------------------------------------------------------------

    def _load(self) -> None:
        last = ""
        for number, path in enumerate(self.segments, start=1):
            fd = _open_ro(path)
            self._fds.append(fd)
            self._sizes.append(os.fstat(fd).st_size)
            header = ewf.parse_file_header(os.pread(fd, ewf.FILE_HEADER_SIZE, 0))
            if header.segment_number != number:
                raise InvalidField(path, "segment number", header.segment_number,
                                   f"expected {number}")
            last = _SegmentWalker(self, number - 1).walk()
            if last == "done" and number != len(self.segments):
                raise FormatError(f"{path}: done section before the last segment")
        if last != "done":
            raise FormatError(f"{self.segments[-1]}: the set ends without a done section "
                              f"(segment {len(self.segments) + 1} missing, or the acquisition "
                              "did not finish)")
        self._finish_load()

    def _finish_load(self) -> None:
        if self.volume is None:
            raise FormatError(f"{self.segments[0]}: no volume section")
        total = sum(len(t.entries) for t in self._tables)
        if total != self.volume.chunk_count:
            raise InvalidField(self.segments[0], "chunk tables", total,
                               f"volume says {self.volume.chunk_count} chunks")
        self._firsts = [t.first_chunk for t in self._tables]
        # zlib's worst case expansion is ~0.03 %; allow padding after the stream too
        self._max_stored = self.volume.chunk_bytes + self.volume.chunk_bytes // 64 + 1024
        if self.header is None:
            log.info("%s: no header section", self.segments[0])


def ewf_mismatch(chunk: Chunk, stored: int) -> FormatError:
    """The error for a chunk whose stored check differs from the one the caller holds."""
    return ChecksumMismatch("E01 chunk", expected=chunk.check or "", actual=f"adler32:{stored:08x}",
                            lba=chunk.extent.start_lba, chunk=chunk.index)




def _open_ro(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise BadInput(f"{path}: cannot open: {err.strerror}") from err


class _SegmentWalker:
    """Follows one segment's section chain and feeds what it finds into the reader."""

    def __init__(self, reader: EwfReader, segment: int) -> None:
        self.r, self.seg = reader, segment
        self.fd, self.size = reader._fds[segment], reader._sizes[segment]
        self.path = reader.segments[segment]
        self.sectors_end: int | None = None
        self.bad_table: FormatError | None = None

    def walk(self) -> str:
        """Walk from offset 13; returns "next" or "done"."""
        offset = ewf.FILE_HEADER_SIZE
        for _ in range(self.size // ewf.DESCRIPTOR_SIZE + 1):
            raw = os.pread(self.fd, ewf.DESCRIPTOR_SIZE, offset)
            if len(raw) < ewf.DESCRIPTOR_SIZE:
                raise Truncated(f"{self.path}: section at {offset} (no done/next section)",
                                ewf.DESCRIPTOR_SIZE, len(raw))
            desc = ewf.parse_section_descriptor(raw, offset)
            if desc.type in ("next", "done"):
                self._check_table2_pending(desc.type)
                return desc.type
            self._check_bounds(desc, offset)
            self._check_table2_pending(desc.type)
            self._handle(desc, offset)
            offset = desc.next_offset
        raise FormatError(f"{self.path}: section chain does not end")

    def _check_bounds(self, desc: ewf.SectionDescriptor, offset: int) -> None:
        end = offset + desc.size
        if desc.size < ewf.DESCRIPTOR_SIZE or end > self.size:
            raise Truncated(f"{self.path}: {desc.type} section at {offset}", end, self.size)
        if not offset < desc.next_offset <= self.size:
            raise InvalidField(f"{self.path}: {desc.type} section at {offset}", "next offset",
                               desc.next_offset, f"must be after it and inside {self.size}")

    def _payload(self, offset: int, size: int, cap: int, what: str) -> bytes:
        if size > cap:
            raise InvalidField(f"{self.path}: {what} section at {offset}", "size", size,
                               f"larger than {cap}")
        return os.pread(self.fd, size, offset + ewf.DESCRIPTOR_SIZE)

    def _handle(self, desc: ewf.SectionDescriptor, offset: int) -> None:
        r, size = self.r, desc.size - ewf.DESCRIPTOR_SIZE
        kind = desc.type
        if kind == "header2" and r.header is None:
            r.header = parse_header2(self._payload(offset, size, MAX_TEXT_SECTION, kind))
        elif kind == "header" and r.header is None:
            r.header = parse_header(self._payload(offset, size, MAX_TEXT_SECTION, kind))
        elif kind in ("volume", "disk") and r.volume is None:
            r.volume = ewf.parse_volume(self._payload(offset, min(size, ewf.VOLUME_SIZE),
                                                      ewf.VOLUME_SIZE, kind))
        elif kind == "sectors":
            self.sectors_end = offset + desc.size
        elif kind == "table" or (kind == "table2" and self.bad_table is not None):
            self._table(offset, size, kind)
        elif kind == "hash":
            r.md5 = r.md5 or ewf.parse_hash(self._payload(offset, size, 4096, kind)).md5.hex()
        elif kind == "digest":
            digest = ewf.parse_digest(self._payload(offset, size, 4096, kind))
            r.md5, r.sha1 = digest.md5.hex(), digest.sha1.hex()
        elif kind == "error2":
            cap = ewf.ERROR2_HEADER_SIZE + 8 * MAX_ERROR_ENTRIES + 4
            r.error_ranges = ewf.parse_error2(self._payload(offset, size, cap, kind)).entries

    def _table(self, offset: int, size: int, kind: str) -> None:
        what = f"{self.path}: {kind} at {offset}"
        try:
            count, _ = ewf.parse_table_header(self._payload(offset, min(size, 24), 24, kind), what)
            if count > MAX_TABLE_ENTRIES or 28 + 4 * count > size:
                raise InvalidField(what, "entry count", count, f"section holds {size} bytes")
            table = ewf.parse_table(self._payload(offset, 28 + 4 * count, 28 + 4 * count, kind),
                                    what)
        except FormatError as err:
            if kind == "table2":
                raise FormatError(f"{what}: both table and table2 are damaged: {err}") from err
            log.warning("%s; trying table2", err)
            self.bad_table = err
            return
        self.bad_table = None
        end = self.sectors_end if self.sectors_end is not None else offset + 76 + size
        prev = self.r._tables[-1] if self.r._tables else None
        first = prev.first_chunk + len(prev.entries) if prev else 0
        self.r._tables.append(_Table(self.seg, first, table.base_offset, end,
                                     array("I", table.entries)))

    def _check_table2_pending(self, kind: str) -> None:
        if self.bad_table is not None and kind != "table2":
            raise self.bad_table
