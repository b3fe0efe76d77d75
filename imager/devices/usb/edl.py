"""Qualcomm EDL (``edl:``) as a Source and a Target: Sahara upload, then Firehose.

Spec: ``edl:[VID:PID|@SERIAL|BUS-PORT][,lun=N][,memory=UFS|eMMC]``; the options ``loader``
(the programmer file, required), ``lun``, ``memory``, ``timeout_ms``, ``payload`` can also be
passed to ``open_source``/``open_target``. A session (``EdlSession``) uploads the programmer
once, configures Firehose (memory type tried UFS then eMMC unless given) and asks every LUN's
geometry with ``getstorageinfo``: the sector size and count come from the device, never from a
partition table. A NAKed read is a ReadError for that range (the acquire salvage narrows it to
the failing sectors); a timeout is answered with a USB reset, a phone that dropped back into
Sahara (re-enumerated) is found again by its locator, and the command is retried.

Write blocking by construction: the Source's session never sends ``program``/``erase``;
only ``EdlTarget`` calls ``FirehoseClient.program``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from imager.devices.base import BaseSource, BaseTarget, Identity
from imager.devices.usb import sahara
from imager.devices.usb.firehose import FirehoseClient, FirehoseNak
from imager.devices.usb.transport import EDL_IDS, Locator, UsbTransport, parse_locator
from imager.errors import (
    BadInput,
    DeviceError,
    DeviceGone,
    ReadError,
    TransportError,
    TransportTimeout,
    UsageError,
    WriteError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_MS = 10000
PROBE_TIMEOUT_MS = 1000          # first read after (re)connecting: HELLO, a log, or nothing
MEMORIES = ("UFS", "eMMC")
RECOVERIES = 3                   # re-handshakes per command before giving up
REAPPEAR_SECONDS = 20.0          # how long a phone that re-enumerated may take to come back
OPTIONS = frozenset({"loader", "lun", "memory", "timeout_ms", "payload", "create_size"})


@dataclass(frozen=True)
class LunInfo:
    """One LUN as the programmer reports it."""

    lun: int
    sector_size: int
    sector_count: int
    raw: dict


def parse_spec(rest: str) -> tuple[str, dict[str, str]]:
    """``"@SER,lun=2"`` -> (``"@SER"``, {"lun": "2"})."""
    locator, opts = "", {}
    for i, part in enumerate(p.strip() for p in rest.split(",")):
        if "=" in part:
            key, _, value = part.partition("=")
            opts[key.strip()] = value.strip()
        elif i == 0:
            locator = part
        elif part:
            raise UsageError(f"edl:{rest}: {part!r} is not KEY=VALUE")
    return locator, opts


class EdlSession:
    """One phone in EDL mode: the claimed interface, the running programmer, its LUNs."""

    def __init__(self, locator: str, loader: str | Path, *, memory: str | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, payload: int = 1 << 20) -> None:
        self.locator_text = locator
        self.locator: Locator = parse_locator(locator)
        try:
            self.loader = Path(loader).read_bytes()
        except OSError as err:
            raise UsageError(f"--loader {loader}: cannot read: {err.strerror}") from err
        if not self.loader:
            raise UsageError(f"--loader {loader}: the file is empty")
        self.loader_path = str(loader)
        self.memories = (memory,) if memory else MEMORIES
        self.timeout_ms, self.payload = timeout_ms, payload
        self.lock = threading.RLock()
        self.transport: UsbTransport | None = None
        self.client: FirehoseClient | None = None
        self.luns: dict[int, LunInfo] = {}
        self.recoveries = 0
        self._connect()
        self.discover()

    # ---- connection --------------------------------------------------------------------
    def _open_transport(self) -> UsbTransport:
        return UsbTransport.open(self.locator, None, "Qualcomm EDL (9008) device", ids=EDL_IDS,
                                 timeout_ms=self.timeout_ms)

    def _connect(self) -> None:
        self.transport = self._open_transport()
        self._handshake()

    def _handshake(self) -> None:
        """Upload the programmer if the phone is in Sahara, then configure Firehose."""
        assert self.transport is not None
        try:
            first = self.transport.read(4096, PROBE_TIMEOUT_MS, "waiting for Sahara HELLO")
        except TransportTimeout:
            first = b""                      # a programmer already running says nothing
        pending = b""
        if sahara.is_hello(first):
            sahara.upload(self.transport, self.loader, first)
        else:
            pending = first if first.lstrip().startswith(b"<?xml") else b""
        self.client = FirehoseClient(self.transport, pending)
        self._configure()

    def _configure(self) -> None:
        assert self.client is not None
        last: FirehoseNak | None = None
        for memory in self.memories:
            try:
                self.client.configure(memory, self.payload)
                return
            except FirehoseNak as err:
                last = err
        assert last is not None
        raise last

    @property
    def identity_extra(self) -> dict[str, Any]:
        info = self.transport.info if self.transport is not None else {}
        return {"vid": info.get("vid", ""), "pid": info.get("pid", ""),
                "usb_port": f"{info.get('bus', '')}-{info.get('port', '')}",
                "memory": self.client.memory if self.client else ""}

    @property
    def serial(self) -> str:
        """The USB serial; PBLs that have none put ``_SN:XXXXXXXX`` in the product string."""
        info = self.transport.info if self.transport is not None else {}
        found = re.search(r"_SN:([0-9A-Fa-f]+)", info.get("product", "") or "")
        return info.get("serial_number", "") or (found[1] if found else "")

    def discover(self) -> dict[int, LunInfo]:
        """getstorageinfo for LUN 0, 1, ... (``num_physical`` of them, else until a NAK)."""
        assert self.client is not None
        luns: dict[int, LunInfo] = {}
        lun, count = 0, None
        while count is None or lun < count:
            info = self.client.storage_info(lun)
            if info is None:
                if lun == 0:
                    raise DeviceError("Firehose: getstorageinfo NAKed for LUN 0")
                break
            luns[lun] = _lun_info(lun, info)
            count = count if count is not None else int(info.get("num_physical") or 0) or 64
            lun += 1
        self.luns = luns
        return luns

    def recover(self, why: Exception) -> None:
        """Bring the link back: USB reset after a timeout, re-find after a re-enumeration."""
        self.recoveries += 1
        log.warning("EDL: %s; re-handshaking", why)
        assert self.transport is not None
        if isinstance(why, DeviceGone):
            self.transport.close(reattach=False)
            self.transport = self._reappear()
        else:
            try:
                self.transport.reset_port()
            except DeviceGone:
                self.transport.close(reattach=False)
                self.transport = self._reappear()
        self._handshake()

    def _reappear(self) -> UsbTransport:
        deadline = time.monotonic() + REAPPEAR_SECONDS
        while True:
            try:
                return self._open_transport()
            except DeviceError:
                if time.monotonic() > deadline:
                    raise DeviceGone(f"edl:{self.locator_text}: the phone left and did not "
                                     f"come back within {REAPPEAR_SECONDS:.0f} s") from None
                time.sleep(0.25)

    def call(self, what: str, action: Callable[[FirehoseClient], T]) -> T:
        """Run ``action`` on the client; on a timeout or lost link re-handshake and retry."""
        with self.lock:
            for attempt in range(RECOVERIES + 1):
                try:
                    assert self.client is not None
                    return action(self.client)
                except (TransportError, DeviceGone) as err:
                    if attempt == RECOVERIES:
                        raise
                    self.recover(err)
            raise AssertionError("unreachable")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close(reattach=False)
            self.transport = None


def _lun_info(lun: int, info: dict) -> LunInfo:
    """qdl's reading of storage_info: block_size is the sector size, total_blocks the count."""
    try:
        ss, count = int(info["block_size"]), int(info["total_blocks"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"Firehose: LUN {lun} storage_info lacks block_size/total_blocks: "
                       f"{info}") from err
    if ss <= 0 or ss % 512 or count <= 0:
        raise BadInput(f"Firehose: LUN {lun} reports {count} sectors of {ss} bytes")
    return LunInfo(lun, ss, count, dict(info))


class _EdlLun:
    """What Source and Target share: one LUN of a session."""

    session: EdlSession
    lun: int
    owns_session: bool
    sector_size: int

    def __init__(self, session: EdlSession, lun: int, sector_size: int | None = None,
                 owns_session: bool = False) -> None:
        ss, count, identity = self._setup(session, lun, sector_size, owns_session)
        super().__init__(ss, count, identity)  # BaseSource or BaseTarget, by the class's MRO
        self.max_transfer_sectors = self._transfer_sectors()

    def _setup(self, session: EdlSession, lun: int, sector_size: int | None,
               owns: bool) -> tuple[int, int, Identity]:
        self.session, self.lun, self.owns_session = session, lun, owns
        info = session.luns.get(lun)
        if info is None:
            raise UsageError(f"edl:{session.locator_text}: LUN {lun} requested, the phone has "
                             f"{', '.join(map(str, sorted(session.luns))) or 'none'}")
        if sector_size and sector_size != info.sector_size:
            raise BadInput(f"edl: LUN {lun} has {info.sector_size}-byte sectors, "
                           f"{sector_size} was asked")
        model = str(info.raw.get("prod_name", "")) or "Qualcomm EDL"
        where = ",".join(t for t in (session.locator_text, f"lun={lun}") if t)
        identity = Identity(kind="edl", path=f"edl:{where}",
                            size_bytes=info.sector_size * info.sector_count,
                            sector_size=info.sector_size, model=model, serial=session.serial,
                            extra={**session.identity_extra, "lun": lun})
        return info.sector_size, info.sector_count, identity

    def _transfer_sectors(self) -> int:
        client = self.session.client
        payload = client.max_payload if client is not None else 1 << 20
        return max(1, payload // self.sector_size)

    def _read(self, lba: int, count: int) -> bytes:
        ss = self.sector_size
        try:
            return self.session.call(f"read {lba}+{count}",
                                     lambda c: c.read(self.lun, ss, lba, count))
        except FirehoseNak as err:
            raise ReadError(lba, count, str(err)) from err
        except TransportTimeout as err:
            raise ReadError(lba, count, f"no answer after {RECOVERIES} recoveries: {err}") \
                from err

    def close(self) -> None:
        if self.owns_session and getattr(self, "session", None) is not None:
            self.session.close()


class EdlSource(_EdlLun, BaseSource):
    """One LUN for reading only: no code path here sends program or erase."""


class EdlTarget(_EdlLun, BaseTarget):
    """One LUN for writing (restore) through Firehose ``program``."""

    def _write(self, lba: int, data: memoryview) -> None:
        ss, count = self.sector_size, len(data) // self.sector_size
        try:
            self.session.call(f"program {lba}+{count}",
                              lambda c: c.program(self.lun, ss, lba, data))
        except FirehoseNak as err:
            raise WriteError(lba, count, str(err)) from err


def open_session(rest: str, opts: dict[str, Any]) -> tuple[EdlSession, int]:
    """A session for ``edl:REST`` with ``opts``, and the LUN asked for (default 0)."""
    locator, spec_opts = parse_spec(rest)
    merged = {**spec_opts, **{k: v for k, v in opts.items() if v is not None}}
    unknown = set(merged) - OPTIONS
    if unknown:
        raise UsageError(f"edl: unknown option(s) {', '.join(sorted(unknown))}")
    loader = merged.get("loader")
    if not loader:
        raise UsageError("edl: needs the phone's Firehose programmer: --loader FILE")
    session = EdlSession(locator, loader, memory=merged.get("memory"),
                         timeout_ms=int(merged.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
                         payload=int(merged.get("payload", 1 << 20)))
    return session, int(merged.get("lun", 0))


def open_source(rest: str, sector_size: int | None = None, **opts: Any) -> EdlSource:
    """``edl:[LOCATOR][,lun=N]`` for reading one LUN (see the module docstring)."""
    session, lun = open_session(rest, opts)
    try:
        return EdlSource(session, lun, sector_size, owns_session=True)
    except BaseException:
        session.close()
        raise


def open_target(rest: str, sector_size: int | None = None, **opts: Any) -> EdlTarget:
    """``edl:[LOCATOR][,lun=N]`` for writing one LUN."""
    opts.pop("create_size", None)
    session, lun = open_session(rest, opts)
    try:
        return EdlTarget(session, lun, sector_size, owns_session=True)
    except BaseException:
        session.close()
        raise
