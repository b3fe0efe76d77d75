"""--partition NAME: only that partition's bytes change, at the TARGET's partition location."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from imager.cli import main
from imager.devices.base import Identity
from imager.devices.file import FileTarget
from imager.errors import TargetRefused, UsageError
from imager.restore import restore
from imager.restore_plan import TargetShape, build_plan, is_identity_partition
from tests.conftest import loop_device, need_tool
from tests.restore_support import ChunkedFileReader, e2fsck_clean, make_gpt_image

# Same names, other places and sizes: boot and system are bigger, so everything after moves.
OTHER_LAYOUT = (("boot", "+1536K", "random"), ("system", "+2560K", "ext4"),
                ("modemst1", "+256K", "random"), ("cache", "+256K", "zero"),
                ("userdata", "0", "ext4"))
SMALL_SYSTEM = (("boot", "+1M", "random"), ("system", "+1M", "ext4"),
                ("userdata", "0", "ext4"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    need_tool("sgdisk", "mkfs.ext4", "e2fsck")
    work = tmp_path_factory.mktemp("restore_part")
    out = {}
    for name, seed, layout in (("src", 1, None), ("other", 2, OTHER_LAYOUT),
                               ("small", 3, SMALL_SYSTEM)):
        path = work / f"{name}.img"
        kw = {} if layout is None else {"layout": layout}
        out[name] = (path, make_gpt_image(path, seed=seed, **kw))
    assert main(["acquire", str(out["src"][0]), str(work / "src.native"), "--quiet",
                 "--chunk-size", "512K"]) == 0
    out["native"] = (work / "src.native", out["src"][1])
    return out


def part_bytes(data: bytes, span: tuple[int, int]) -> bytes:
    return data[span[0] * 512:(span[1] + 1) * 512]


def test_partition_restore_writes_into_the_targets_partition_only(images, tmp_path) -> None:
    src, src_parts = images["src"]
    other, other_parts = images["other"]
    dst = tmp_path / "dst.img"
    dst.write_bytes(other.read_bytes())
    before, image = dst.read_bytes(), src.read_bytes()
    reader, target = ChunkedFileReader(src), FileTarget(str(dst))
    try:
        plan = build_plan(reader, target, partitions=("system", "boot"))
        restore(reader, target, plan)
    finally:
        target.close()
        reader.close()
    after = dst.read_bytes()
    assert plan.partitions == ("system", "boot")
    sys_lo, sys_hi = other_parts["system"][0] * 512, (other_parts["system"][1] + 1) * 512
    src_sys = part_bytes(image, src_parts["system"])
    assert after[sys_lo:sys_lo + len(src_sys)] == src_sys
    assert after[sys_lo + len(src_sys):sys_hi] == before[sys_lo + len(src_sys):sys_hi]
    boot_lo = other_parts["boot"][0] * 512
    src_boot = part_bytes(image, src_parts["boot"])
    assert after[boot_lo:boot_lo + len(src_boot)] == src_boot
    changed = [(boot_lo, boot_lo + len(src_boot)), (sys_lo, sys_lo + len(src_sys))]
    for i in range(0, len(after), 512):  # every other sector identical to before
        if not any(lo <= i < hi for lo, hi in changed):
            assert after[i:i + 512] == before[i:i + 512], f"sector {i // 512} changed"
    fsck = e2fsck_clean(dst, other_parts["system"][0],
                        other_parts["system"][0] + len(src_sys) // 512 - 1, tmp_path)
    assert fsck.returncode == 0, fsck.stdout


def test_partition_that_does_not_fit_or_does_not_exist_is_refused(images, tmp_path) -> None:
    src, _ = images["src"]
    small, _ = images["small"]
    dst = tmp_path / "dst.img"
    dst.write_bytes(small.read_bytes())
    reader, target = ChunkedFileReader(src), FileTarget(str(dst))
    try:
        with pytest.raises(TargetRefused, match=r"partition 'system': the image's has 4096 "
                                                r"sectors, the target's only 2048"):
            build_plan(reader, target, partitions=("system",))
        with pytest.raises(UsageError, match="no partition named 'modemst1' in the target"):
            build_plan(reader, target, partitions=("modemst1",))
    finally:
        target.close()
        reader.close()
    assert dst.read_bytes() == small.read_bytes()


def test_cli_partition_restore_from_a_native_image(images, tmp_path, monkeypatch, capsys):
    native, src_parts = images["native"]
    src, _ = images["src"]
    other, other_parts = images["other"]
    dst = tmp_path / "dst.img"
    dst.write_bytes(other.read_bytes())
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = main(["restore", str(native), str(dst), "--partition", "system", "--yes", "-q"])
    assert code == 0, capsys.readouterr().err
    after, before = dst.read_bytes(), other.read_bytes()
    lo = other_parts["system"][0] * 512
    want = part_bytes(src.read_bytes(), src_parts["system"])
    assert after[lo:lo + len(want)] == want
    assert after[:lo] == before[:lo] and after[lo + len(want):] == before[lo + len(want):]


@pytest.mark.parametrize(("name", "identity"), [
    ("persist", True), ("modemst1", True), ("modemst2", True), ("fsg", True), ("fsc", True),
    ("efs", True), ("nvdata", True), ("nvram", True), ("protect1", True), ("protect_f", True),
    ("protect_s", True), ("DPP", True), ("sec", True), ("persist_a", True),
    ("system", False), ("userdata", False), ("persistent", False), ("secdata", False),
    ("boot_a", False), ("modem", False)])
def test_identity_partition_names(name: str, identity: bool) -> None:
    assert is_identity_partition(name) is identity


class SourcedReader(ChunkedFileReader):
    """A reader whose image records the identity of the device it came from."""

    def __init__(self, path: Path, source: Identity) -> None:
        super().__init__(path)
        self.source_identity = source


def phone(serial: str, size: int) -> Identity:
    return Identity(kind="block", path="/dev/sdX", size_bytes=size, sector_size=512,
                    model="Phone 9", serial=serial)


@pytest.mark.parametrize(("image_serial", "target_serial", "skipped"), [
    ("ABC123", "ABC123", ()),              # the same phone: identity goes back where it was
    ("ABC123", "XYZ789", ("modemst1",)),   # another phone: its identity is kept
    ("", "", ("modemst1",)),               # nothing proves it is the same phone
])
def test_identity_partitions_follow_the_source_identity(images, image_serial, target_serial,
                                                        skipped) -> None:
    src, _ = images["src"]
    size = src.stat().st_size
    reader = SourcedReader(src, phone(image_serial, size))
    target = TargetShape(512, size // 512, phone(target_serial, size))
    try:
        plan = build_plan(reader, target)
        assert plan.skipped_identity == skipped
        covered = sum(s.count for s in plan.steps)
        assert covered == size // 512 - (512 if skipped else 0)  # modemst1 is 512 sectors
        forced = build_plan(reader, target, include_identity=True)
        assert forced.skipped_identity == () and sum(s.count for s in forced.steps) == size // 512
    finally:
        reader.close()


def test_target_identity_elsewhere_is_refused(images, tmp_path) -> None:
    src, _ = images["src"]
    other, other_parts = images["other"]  # its modemst1 sits at other LBAs than the image's
    backing = tmp_path / "other-phone.img"
    backing.write_bytes(other.read_bytes())
    reader = ChunkedFileReader(src)
    try:
        with loop_device(backing) as dev:
            target = FileTarget(dev)
            try:
                first, last = other_parts["modemst1"]
                with pytest.raises(TargetRefused, match=rf"identity partition 'modemst1' \(LBA "
                                                        rf"{first}..{last}\) would be overwr"):
                    build_plan(reader, target)
                assert build_plan(reader, target, include_identity=True).skipped_identity == ()
            finally:
                target.close()
    finally:
        reader.close()
    assert backing.read_bytes() == other.read_bytes()
