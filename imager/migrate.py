"""Migrating a GPT image onto a bigger device (and ``--grow-last``).

The image's GPT is restored as it is; afterwards the backup array+header are written at the
target's last LBAs, both headers get the new AlternateLBA/LastUsableLBA (the backup its new
PartitionEntryLBA) and fresh CRCs, the protective MBR its new size, and the stale backup header
left in the middle of the disk is zeroed so no scanner finds it. The new sectors are computed
from the *image* (verified chunks), so re-running after an interruption gives the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from formats.errors import FormatError
from formats.gpt import GptHeader, check_gpt_header, parse_gpt_header
from formats.gpt_build import GptImage, fit_protective_mbr, relocate_backup
from imager.errors import UsageError, VerificationFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrateSpec:
    """Move the GPT from an image of ``image_sector_count`` to a disk of ``target_sector_count``."""

    image_sector_count: int
    target_sector_count: int
    grow_last: bool = False


def plan_migration(reader: Any, target_sector_count: int, table: Any,
                   grow_last: bool, notes: list[str]) -> MigrateSpec | None:
    """The migration a whole-device restore needs (``None`` for same-size or non-GPT)."""
    image_sector_count = reader.sector_count
    bigger = target_sector_count > image_sector_count
    kind = getattr(table, "kind", "none") if table is not None else _probe_gpt(reader)
    if kind != "gpt":
        if grow_last:
            raise UsageError(f"--grow-last needs a GPT image (the image's table is {kind})")
        if bigger:
            notes.append(f"target is larger than the image; its table ({kind}) is left as is")
        return None
    if not bigger and not grow_last:
        return None
    spec = MigrateSpec(image_sector_count, target_sector_count, grow_last)
    extra = target_sector_count - image_sector_count
    notes.append(f"GPT migrated: backup moved to LBA {target_sector_count - 1} "
                 f"(+{extra} sectors)" + ("; last partition grown to fill the disk"
                                          if grow_last else ""))
    return spec


def _probe_gpt(reader: Any) -> str:
    """``gpt`` when the image has a valid primary GPT header at LBA 1 (no table layer needed)."""
    try:
        _image_primary(reader)
    except FormatError:
        return "none"
    return "gpt"


def _image_primary(reader: Any) -> GptHeader:
    """The image's primary GPT header, checked against its place and the image size."""
    header = parse_gpt_header(reader.read(1, 1), 1)
    check_gpt_header(header, lba=1, sector_count=reader.sector_count,
                     sector_size=reader.sector_size)
    return header


def compute_relocation(reader: Any, spec: MigrateSpec) -> GptImage:
    """The migrated GPT sectors, from the image's primary GPT.

    Raises:
        FormatError: the image's primary GPT is not valid.
    """
    ss = reader.sector_size
    header = _image_primary(reader)
    array = reader.read(header.entry_lba, header.array_sectors(ss))
    return relocate_backup(header, array, sector_size=ss,
                           new_sector_count=spec.target_sector_count, grow_last=spec.grow_last)


def apply_migration(reader: Any, target: Any, spec: MigrateSpec,
                    verify: bool = True) -> GptImage:
    """Write the migrated GPT onto ``target`` (after the image itself was restored).

    Raises:
        FormatError: the image's primary GPT is not valid.
        VerificationFailed: a written sector reads back different.
    """
    ss = reader.sector_size
    gpt = compute_relocation(reader, spec)
    writes = list(gpt.writes_backup_first())
    pmbr = fit_protective_mbr(reader.read(0, 1), spec.target_sector_count)
    if pmbr is not None:
        writes.append((0, pmbr))
    old_backup = spec.image_sector_count - 1
    if old_backup != gpt.backup.my_lba:
        writes.append((old_backup, bytes(ss)))
    for lba, data in writes:  # backup first: a crash in between leaves a valid primary
        target.write(lba, data)
    target.flush()
    if verify:
        for lba, data in writes:
            back = target.read(lba, len(data) // ss)
            if back != data:
                raise VerificationFailed(f"{target.identity.path}: migrated GPT sectors at LBA "
                                         f"{lba} read back different")
    log.info("GPT moved: backup header at LBA %d, last usable LBA %d", gpt.backup.my_lba,
             gpt.primary.last_usable_lba)
    return gpt
