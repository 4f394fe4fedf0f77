"""E-bike UHF RFID reader driver, ``chafon-uhf-v1`` (PROTOCOLS.md, "UHF RFID reader").

Owns one Chafon UHFReader18-family reader on a serial line and emits
CONTRACT.md ``ebike.pass`` readings, plus ``device.status`` through
``DeviceHealth``.

- Answer mode (default): send inventory (0x01) every ``poll_interval_ms``; a
  reply with status 0x03 is followed by more frames of the same inventory,
  0xFB means no tag.
- Scan mode: set the work mode (0x35, ``Read_mode`` 1, RS-485 output) and
  consume the reader's 0xEE pushes, probing with "get work mode" (0x36) when the
  line has been quiet, because a reader in scan mode is silent when no bike
  passes.
- A tag is read many times while a bike passes: ``PassCollapser`` (a pure state
  machine, time passed in) collapses the reads of one EPC into one pass, closed
  ``collapse_window_s`` after the tag was last seen (or after ``max_pass_s`` for
  a tag that never leaves).
- The reader is offline when its port is gone, or when nothing valid came
  from it for ``offline_after_s``.

This protocol carries no RSSI (neither the inventory reply nor the 0xEE push
has one), so ``rssi`` is ``null``; the reader has one antenna port, reported as
the configured ``antenna``.

Longer than 400 lines because answer mode, scan mode, the pass collapser and offline
probing are one reader's behaviour; the collapser is pure and tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.base import (
    Clock,
    Driver,
    Priority,
    Reading,
    ReadingSink,
    ReadingType,
)
from drivers.codecs.chafon_uhf import (
    BROADCAST_ADDRESS,
    ChafonDecoder,
    Cmd,
    CommandFrame,
    Direction,
    Discarded,
    Frame,
    GetWorkMode,
    Inventory,
    InventoryReply,
    ReaderInfoReply,
    ReplyFrame,
    SetWorkMode,
    StatusReply,
    TagPushed,
    WorkMode,
    WorkModeReply,
)
from drivers.config.uhf_reader import UhfReaderConfig
from drivers.masking import mask
from drivers.serial_device import SerialDeviceDriver
from drivers.transports.errors import TransportTimeoutError
from drivers.transports.serial import SerialTransport, run_serial

__all__ = [
    "PassCollapser",
    "TagPass",
    "UhfReaderConfig",
    "UhfReaderDriver",
    "build_driver",
    "rfc3339_ms",
]

_LOGGER = logging.getLogger(__name__)

FRAME_GAP_S = 0.05
"""Silence after which a partial frame is abandoned. PROTOCOLS.md says bytes of
one frame are < 15 ms apart; USB adapters batch up to 16 ms and a busy Pi adds
scheduling noise, so allow 50 ms."""
TICK_S = 0.25
"""Longest a read waits before passes are expired and health is re-checked."""
HOUSEKEEPING_S = 0.05
"""Pass expiry and the offline check run at most this often."""

_REPLY_TYPES = (InventoryReply, ReaderInfoReply, WorkModeReply, StatusReply, TagPushed)


def rfc3339_ms(wall: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z`` (CONTRACT.md timestamps)."""
    dt = datetime.fromtimestamp(wall, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _mask(text: str) -> str:
    return mask(text, head=4, tail=4)


# --- collapse state machine (pure) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class TagPass:
    """One bike pass: every read of one EPC with no gap as long as the window."""

    epc: str
    first_wall: float
    first_mono: float
    last_wall: float
    last_mono: float
    count: int
    rssi: int | None
    antenna: int | None

    def data(self) -> dict[str, Any]:
        """The ``ebike.pass`` data of CONTRACT.md."""
        return {
            "epc": self.epc,
            "rssi": self.rssi,
            "antenna": self.antenna,
            "first_seen": rfc3339_ms(self.first_wall),
            "last_seen": rfc3339_ms(self.last_wall),
            "count": self.count,
        }


class PassCollapser:
    """Collapses repeated reads of one EPC into passes. Time is passed in.

    A pass closes when its tag has not been seen for ``window_s`` (checked by
    ``expire``, and by ``observe`` for a late read), when it has lasted
    ``max_pass_s``, or when more than ``max_open`` tags are open (the oldest
    closes early, so memory stays bounded).
    """

    def __init__(self, *, window_s: float, max_pass_s: float = 60.0, max_open: int = 1024) -> None:
        self._window_s = window_s
        self._max_pass_s = max_pass_s
        self._max_open = max_open
        self._open: dict[str, TagPass] = {}
        """The pass of each EPC still open, as it stands (replaced on every read)."""

    @property
    def open_count(self) -> int:
        return len(self._open)

    def observe(
        self,
        epc: str,
        *,
        mono: float,
        wall: float,
        rssi: int | None = None,
        antenna: int | None = None,
    ) -> list[TagPass]:
        """Record one read; return any passes this read closed."""
        closed: list[TagPass] = []
        current = self._open.get(epc)
        if current is not None and (
            mono - current.last_mono >= self._window_s
            or mono - current.first_mono >= self._max_pass_s
        ):
            closed.append(current)
            del self._open[epc]
            current = None
        if current is None:
            if len(self._open) >= self._max_open:
                oldest = next(iter(self._open))
                closed.append(self._open.pop(oldest))
            self._open[epc] = TagPass(epc, wall, mono, wall, mono, 1, rssi, antenna)
            return closed
        best_rssi = current.rssi
        if rssi is not None and (best_rssi is None or rssi > best_rssi):
            best_rssi = rssi
        # A new frozen pass per read (about a microsecond): the open pass is
        # already the one reported when it closes.
        self._open[epc] = TagPass(
            epc,
            current.first_wall,
            current.first_mono,
            wall,
            max(mono, current.last_mono),
            current.count + 1,
            best_rssi,
            current.antenna if current.antenna is not None else antenna,
        )
        return closed

    def expire(self, mono: float) -> list[TagPass]:
        """Close and return every pass whose tag was last seen ``window_s`` ago or more."""
        done = [
            epc
            for epc, p in self._open.items()
            if mono - p.last_mono >= self._window_s or mono - p.first_mono >= self._max_pass_s
        ]
        return [self._open.pop(epc) for epc in done]

    def next_deadline(self) -> float | None:
        """Monotonic time of the next expiry, if any pass is open."""
        if not self._open:
            return None
        return min(
            min(p.last_mono + self._window_s, p.first_mono + self._max_pass_s)
            for p in self._open.values()
        )

    def flush(self) -> list[TagPass]:
        """Close every open pass (shutdown)."""
        out = list(self._open.values())
        self._open.clear()
        return out


# --- driver --------------------------------------------------------------------


class UhfReaderDriver(SerialDeviceDriver):
    """Driver for one Chafon UHF reader; implements ``drivers.base.Driver``."""

    DEVICE_NOUN = "a UHF reader"

    def __init__(self, config: UhfReaderConfig, *, sink: ReadingSink, clock: Clock) -> None:
        super().__init__(config, sink=sink, clock=clock)
        self.config = config
        self.collapser = PassCollapser(
            window_s=config.collapse_window_s, max_pass_s=config.max_pass_s
        )
        self._frames: deque[ReplyFrame] = deque()
        self._decoder = ChafonDecoder(Direction.TO_HOST)
        self._transport: SerialTransport | None = None
        self._last_heard = clock.monotonic()
        self._next_tick = 0.0
        self._reply_timeout_s = config.reply_timeout_ms / 1000
        self._garbled = False
        """Bytes were discarded since the last request went out."""

    # Driver protocol (actions and execute: SerialDeviceDriver, none)

    async def run(self) -> None:
        """Run until cancelled; reopens the port with backoff when it vanishes."""
        try:
            await run_serial(
                self.config.transport,
                self._session,
                on_up=self._on_up,
                on_down=self._on_down,
            )
        finally:
            # Passes still open at shutdown are real passes: report them now
            # (put never blocks), rather than lose them.
            self._emit_passes(self.collapser.flush())

    # port life cycle (on up and on down: SerialDeviceDriver)

    async def _session(self, transport: SerialTransport) -> None:
        # A new decoder per connection: no stale partial frame survives a reopen.
        self._decoder = ChafonDecoder(Direction.TO_HOST)
        self._frames.clear()
        self._transport = transport
        self._last_heard = self._clock.monotonic()
        try:
            if self.config.mode == "scan":
                await self._scan_loop()
            else:
                await self._answer_loop()
        finally:
            self._transport = None

    # health

    def _heard(self) -> None:
        self._last_heard = self._clock.monotonic()
        self._online("answering")

    def _tick(self) -> None:
        now = self._clock.monotonic()
        if now < self._next_tick:
            return
        # Expiry walks every open pass, and at wire speed this is called once
        # per read: throttle it.
        self._next_tick = now + HOUSEKEEPING_S
        self._emit_passes(self.collapser.expire(now))
        self._offline_when_silent(
            now - self._last_heard,
            self.config.offline_after_s,
            detail="no reply",
        )

    # readings

    def _observe(self, epc: bytes) -> None:
        passes = self.collapser.observe(
            epc.hex().upper(),
            mono=self._clock.monotonic(),
            wall=self._clock.wall(),
            rssi=None,  # chafon-uhf-v1 reports no RSSI
            antenna=self.config.antenna,
        )
        self.health.count("tag_reads")
        self._emit_passes(passes)

    def _emit_passes(self, passes: list[TagPass]) -> None:
        for p in passes:
            if _LOGGER.isEnabledFor(logging.DEBUG):
                _LOGGER.debug(
                    "pass device=%s epc=%s count=%d", self.device_id, _mask(p.epc), p.count
                )
            # ts is when the bike passed (first read), not when the window closed.
            self._sink.put(
                Reading(
                    device=self.device_id,
                    type=ReadingType.EBIKE_PASS,
                    data=p.data(),
                    priority=Priority.ROUTINE,
                    wall_ts=p.first_wall,
                    mono_ts=p.first_mono,
                )
            )
            self.health.count("passes")

    # frames

    def _absorb(self, events: list[Frame | Discarded]) -> None:
        for event in events:
            if isinstance(event, Discarded):
                self.health.count("frames_discarded")
                self.health.count("bytes_discarded", event.count)
                self._garbled = True
                continue
            if not isinstance(event, _REPLY_TYPES):
                continue  # unreachable with a TO_HOST decoder; keeps the types exact
            address = self.config.address
            if address not in (BROADCAST_ADDRESS, event.address):
                self.health.count("frames_other_address")
                continue
            self.health.count("frames")
            self._heard()
            self._frames.append(event)

    async def _next_frame(
        self, deadline: float, *, stop_on_garbled: bool = False
    ) -> ReplyFrame | None:
        """The next frame from the reader, or None at ``deadline`` (loop time).

        With ``stop_on_garbled``, also None once garbage was heard and the line
        then stayed quiet for ``FRAME_GAP_S`` with no frame: the reply came
        garbled and will not come whole (``self._garbled`` tells the two apart).
        """
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._frames:
                return self._frames.popleft()
            self._tick()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            partial = self._decoder.pending > 0
            watch_quiet = partial or (stop_on_garbled and self._garbled)
            wait = min(remaining, FRAME_GAP_S if watch_quiet else TICK_S)
            try:
                async with asyncio.timeout(wait):
                    data = await transport.read()
            except TimeoutError:
                if partial:
                    self._absorb(self._decoder.idle())
                if stop_on_garbled and self._garbled and not self._frames:
                    return None
                continue
            self._absorb(self._decoder.feed(data))

    def _dispatch(self, frame: ReplyFrame) -> None:
        """Handle a frame nobody is waiting for."""
        if isinstance(frame, TagPushed):
            self._observe(frame.epc)
        elif isinstance(frame, InventoryReply):
            for epc in frame.epcs:  # a late part of an earlier inventory: still real reads
                self._observe(epc)
        else:
            self.health.count("frames_unexpected")

    async def _request(
        self, request: CommandFrame, accept: Callable[[ReplyFrame], bool]
    ) -> ReplyFrame:
        """Send ``request`` and return the first frame ``accept`` takes.

        Raises:
            TransportTimeoutError: no such frame within ``reply_timeout_ms``.
            TransportError: the port failed.
        """
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        resends = self.config.retries
        self._garbled = False
        await transport.write(request.encode())
        deadline = loop.time() + self._reply_timeout_s
        while True:
            frame = await self._next_frame(deadline, stop_on_garbled=True)
            if frame is None and self._garbled and loop.time() < deadline:
                # Heard, but garbled, and the line is quiet again: ask again now
                # rather than wait out the reply timeout (issue 9 item 10); with
                # no resend left, give up now, so the next poll comes soon.
                self.health.count("garbled_replies")
                if resends <= 0:
                    raise TransportTimeoutError(
                        transport.port, f"garbled replies to 0x{request.cmd:02X}"
                    )
                resends -= 1
                self._garbled = False
                await transport.write(request.encode())
                deadline = loop.time() + self._reply_timeout_s
                continue
            if frame is None:
                self.health.count("timeouts")
                # STYLE.md §4: after a timeout, drain the input and reset the decoder.
                dropped = transport.discard_input() + self._decoder.reset()
                if dropped:
                    self.health.count("bytes_discarded", dropped)
                raise TransportTimeoutError(transport.port, f"no reply to 0x{request.cmd:02X}")
            if accept(frame):
                return frame
            self._dispatch(frame)

    async def _pump(self, duration_s: float) -> None:
        """Handle whatever the reader sends for ``duration_s``."""
        deadline = asyncio.get_running_loop().time() + duration_s
        while (frame := await self._next_frame(deadline)) is not None:
            self._dispatch(frame)

    async def _set_mode(self, mode: WorkMode) -> bool:
        """Set the work mode; True when the reader acknowledged it."""
        try:
            reply = await self._request(
                SetWorkMode(mode, self.config.address),
                lambda f: f.cmd in (Cmd.SET_WORK_MODE, Cmd.UNKNOWN),
            )
        except TransportTimeoutError:
            return False
        if reply.status != 0:
            self.health.count("reader_errors")
            _LOGGER.warning(
                "work mode refused device=%s status=0x%02X", self.device_id, reply.status
            )
        return True

    async def _answer_loop(self) -> None:
        # A reader left in scan mode by an earlier configuration would keep
        # pushing; put it in answer mode first (best effort: pushes are read anyway).
        await self._set_mode(WorkMode.answer())
        interval_s = self.config.poll_interval_ms / 1000
        while True:
            await self._inventory()
            await self._pump(interval_s)

    async def _inventory(self) -> None:
        """One inventory round: the reply, and its continuation frames (status 0x03)."""

        def is_inventory(frame: ReplyFrame) -> bool:
            return frame.cmd in (Cmd.INVENTORY, Cmd.UNKNOWN) and not isinstance(frame, TagPushed)

        try:
            reply: ReplyFrame | None = await self._request(
                Inventory(self.config.address), is_inventory
            )
        except TransportTimeoutError:
            return
        while reply is not None:
            if not isinstance(reply, InventoryReply):
                self.health.count("reader_errors")  # an error status, or 0xFE unknown
                return
            for epc in reply.epcs:
                self._observe(epc)
            if not reply.more_follow:
                return
            reply = await self._next_inventory_frame(is_inventory)

    async def _next_inventory_frame(
        self, is_inventory: Callable[[ReplyFrame], bool]
    ) -> ReplyFrame | None:
        """The next frame of a multi-frame inventory, or None when it does not come."""
        deadline = asyncio.get_running_loop().time() + self._reply_timeout_s
        while (frame := await self._next_frame(deadline)) is not None:
            if is_inventory(frame):
                return frame
            self._dispatch(frame)
        self.health.count("timeouts")
        return None

    async def _scan_loop(self) -> None:
        wanted = WorkMode.scan(self.config.tag_time_s)
        configured = False
        probe_s = self.config.probe_interval_s
        while True:
            if not configured:
                configured = await self._set_mode(wanted)
            await self._pump(probe_s)
            quiet = self._clock.monotonic() - self._last_heard
            if configured and quiet >= probe_s:
                try:
                    reply = await self._request(
                        GetWorkMode(self.config.address),
                        lambda f: f.cmd == Cmd.GET_WORK_MODE,
                    )
                except TransportTimeoutError:
                    continue
                if isinstance(reply, WorkModeReply) and reply.mode != wanted:
                    # The reader rebooted or was reset to answer mode: set it again.
                    _LOGGER.info("reader left scan mode device=%s", self.device_id)
                    configured = False


def build_driver(config: UhfReaderConfig, *, sink: ReadingSink, clock: Clock) -> Driver:
    """The supervisor's factory for ``kind: uhf_reader``."""
    return UhfReaderDriver(config, sink=sink, clock=clock)
