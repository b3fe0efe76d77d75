"""The kept samples of every native format version (fixtures/format-samples/) must stay readable
forever."""

from __future__ import annotations

import struct

from imager.image.native import NativeReader
from imager.partitions import image_partitions
from imager.verify import verify_image
from tests.acquire_support import cli, zstd_d_sha256
from tests.conftest import FIXTURES

SAMPLE = FIXTURES / "format-samples" / "native-v1.0.imgz"
SOURCE_SHA256 = "5a1aa21731b47ad28c8407d9764adadc1891cb74413d1f16cc977ce2a0266fa3"  # sha256sum
SOURCE_MD5 = "7bc1f37e5b051fa16d857bf2a781de84"                                     # md5sum


def test_stock_zstd_and_imager_agree_with_the_recorded_source_hashes() -> None:
    assert zstd_d_sha256(SAMPLE) == SOURCE_SHA256
    with NativeReader(str(SAMPLE)) as reader:
        assert reader.manifest.version == (1, 0)
        assert reader.hashes == {"md5": SOURCE_MD5, "sha256": SOURCE_SHA256}
        assert verify_image(reader).ok
        assert [(p.name, p.first_lba, p.last_lba) for p in image_partitions(reader)] == [
            ("data", 40, 1023), ("erased", 1024, 2014)]
        assert reader.read(1024, 256) == b"\xff" * 256 * 512
    assert cli("verify", "--quiet", str(SAMPLE))[0] == 0


def test_layout_of_format_1_0() -> None:
    """docs/FORMAT.md, checked on the bytes: data frames, manifest frame, seek table last."""
    blob = SAMPLE.read_bytes()
    assert blob[:4] == b"\x28\xb5\x2f\xfd"                              # chunk 0 is a zstd frame
    count, desc, magic = struct.unpack("<IBI", blob[-9:])
    assert (count, desc, magic) == (16, 0x80, 0x8F92EAB1)
    table_start = len(blob) - (8 + 12 * count + 9)
    assert struct.unpack_from("<II", blob, table_start) == (0x184D2A5E, 12 * count + 9)
    sizes = [struct.unpack_from("<III", blob, table_start + 8 + 12 * i) for i in range(count)]
    manifest_at = sum(c for c, _, _ in sizes)
    magic, length = struct.unpack_from("<II", blob, manifest_at)
    assert magic == 0x184D2A51 and manifest_at + 8 + length == table_start
    assert blob[manifest_at + 8:manifest_at + 16] == b"IMGRMNFT"
    assert all(d == 65536 for _, d, _ in sizes)
    for (c, _, ck), off in zip(sizes, [sum(s[0] for s in sizes[:i]) for i in range(count)]):
        assert struct.unpack_from("<I", blob, off + c - 4)[0] == ck  # frame checksum == entry


SAMPLE_1_1 = FIXTURES / "format-samples" / "native-v1.1.imgz"   # the same source, format 1.1


def test_format_1_1_sample_reads_and_its_blake3_checks_equal_b3sum() -> None:
    import subprocess

    from formats.extent import Kind
    from tests.conftest import need_tool

    need_tool("b3sum", "zstd")
    assert zstd_d_sha256(SAMPLE_1_1) == SOURCE_SHA256
    raw = subprocess.run(["zstd", "-d", "-q", "-c", str(SAMPLE_1_1)], check=True,
                         capture_output=True).stdout
    with NativeReader(str(SAMPLE_1_1)) as reader:
        assert reader.manifest.version == (1, 1) and reader.manifest.chunk_check == "blake3"
        assert reader.hashes == {"md5": SOURCE_MD5, "sha256": SOURCE_SHA256}
        assert verify_image(reader).ok
        data = [c for c in reader.chunks() if c.extent.kind is Kind.DATA]
        assert data
        for c in data:
            piece = raw[c.extent.start_lba * 512:c.extent.end_lba * 512]
            want = subprocess.run(["b3sum", "--no-names"], input=piece, check=True,
                                  capture_output=True).stdout.decode().split()[0]
            assert c.check == want
        assert [(p.name, p.first_lba, p.last_lba) for p in image_partitions(reader)] == [
            ("data", 40, 1023), ("erased", 1024, 2014)]
    assert cli("verify", "--quiet", str(SAMPLE_1_1))[0] == 0

