"""QA regression: an E01 acquisition stopped while a pipeline chunk was half written (what
Ctrl-C does: the last checkpoint then holds the chunk's first EWF chunks, as seen on a 1 GiB
phone image) resumes, and the finished set is the source byte for byte.

Expected values: md5sum of the source bytes (hashlib over the construction) as reported by
libewf's ewfverify, and the bytes ewfexport gives back.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from formats.extent import Extent
from imager.image.ewf_writer import EwfSink
from tests.ewf_support import ewfexport_raw, ewfverify

SECTOR = 512
CHUNK = 128            # pipeline chunk: 64 KiB = two 32 KiB EWF chunks (64 sectors each)
CHUNKS = 6


def _sink(path: Path, reopen_at: int | None = None) -> EwfSink:
    kw = {"sector_size": SECTOR, "sector_count": CHUNK * CHUNKS, "chunk_sectors": CHUNK}
    if reopen_at is not None:
        return EwfSink.reopen(str(path), reopen_at, **kw)
    return EwfSink(str(path), **kw)


def test_resume_after_a_checkpoint_inside_a_pipeline_chunk(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * CHUNKS * SECTOR)
    path = tmp_path / "ev.E01"
    first = _sink(path)
    for i in range(2):                                   # two whole pipeline chunks
        first.write(Extent(i * CHUNK, CHUNK), data[i * CHUNK * SECTOR:(i + 1) * CHUNK * SECTOR])
    half = CHUNK // 2                                    # then the first half of the third
    first.write(Extent(2 * CHUNK, half), data[2 * CHUNK * SECTOR:(2 * CHUNK + half) * SECTOR])
    state = first.checkpoint()
    assert (state["chunks"], state["durable_lba"]) == (2, 2 * CHUNK + half)
    first._file.close()                                  # the process is gone here

    sink = _sink(path, state["offset"])
    replayed = list(sink.replay())
    assert replayed == [data[:CHUNK * SECTOR], data[CHUNK * SECTOR:2 * CHUNK * SECTOR]]
    for i in range(2, CHUNKS):                           # the pipeline writes chunk 2 again
        sink.write(Extent(i * CHUNK, CHUNK), data[i * CHUNK * SECTOR:(i + 1) * CHUNK * SECTOR])
    sink.finalize()

    result = ewfverify(path)
    assert result.returncode == 0, result.stdout
    assert hashlib.md5(data).hexdigest() in result.stdout
    assert ewfexport_raw(path, tmp_path / "x") == data
