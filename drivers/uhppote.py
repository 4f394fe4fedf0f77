"""UHPPOTE UT0311-L0x / "WG" door controller driver (PROTOCOL-UHPPOTE.md, issue 11).

One driver per controller. The controller decides cards itself from its own
card table (kept equal to the gateway's access list by ``drivers.uhppote_sync``)
and keeps its own event log; the driver collects every event, opens doors on
signed commands and keeps the controller's clock right.

Events are never missed (§6 "Catch-up"): pushed events are hints. The driver
holds, durably in the gateway (``DeviceStateStore``), the last event index it
has turned into readings, as ``serial:index``. Readings are put in the sink
*before* that key, and the gateway's store writes the key in the same outbox
transaction as those readings, so a crash can neither lose events behind a
moved bookmark nor repeat them behind a stale one. The controller's own
bookmark (0xB2) is moved only after that, as a courtesy to other tools and
as the starting point when the gateway's state is lost. Catch-up (get-status
for the newest index, then get-event for each missing one) runs at start, on
a timer, after a door command and whenever a push skips an index; a push with
the next index is used as it is. Overwritten events (type 0xFF) become one
``device.status`` alarm naming the gap, found with a binary search rather
than one request per lost event.

Door ids (CONTRACT.md 1.1): ``doors`` maps door numbers 1..4 to door ids;
``door.event`` readings carry the door id, and commands address the door id
through ``doors()``, which the gateway routes to this driver.

Longer than 400 lines because the config model (every option described) and
the one state machine of a controller live together: catch-up, bookmarks,
adoption and gaps share the indexes, and the door commands wait on the
events it reads. What stands alone is apart: the event meaning
(``uhppote_events``), requests (``uhppote_link``), the card table
(``uhppote_cards``) and its sync (``uhppote_sync``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.access_rules import AccessList
from drivers.actions import DeviceAction, DoorOpen, SetDoorMode
from drivers.base import (
    ActionNotSupportedError,
    Clock,
    DeviceError,
    DeviceHealth,
    DeviceState,
    DeviceStateStore,
    Driver,
    Priority,
    Reading,
    ReadingSink,
    ReadingType,
    StagedStateStore,
    device_errors,
)
from drivers.config.uhppote import UhppoteConfig
from drivers.transports.errors import TransportError
from drivers.uhppote_events import (
    REASON_POWER_ON,
    REASON_RESET,
    EventClass,
    Meaning,
    card_to_hex,
    classify,
    controller_time_to_wall,
    is_empty_timestamp,
    wall_to_controller_time,
)
from drivers.uhppote_link import DEFAULT_PORT, EventListener, UhppoteLink, split_address
from drivers.uhppote_sync import CardSync

_LOGGER = logging.getLogger(__name__)

ACTION_OPEN = "door.open"
ACTION_SET_MODE = "door.set_mode"
TYPE_OVERWRITTEN = 0xFF
MODE_CODES = {"open": 1, "locked": 2, "normal": 3}  # 0x80 modes
SET_TIME_TOLERANCE_S = 2.0  # the controller keeps whole seconds
KEY_EVENTS = "event_index"  # "serial:index" of the last event made durable
KEY_LIST_VERSION = "list_version"  # "serial:version" last fully written


@dataclass(frozen=True, slots=True)
class ControllerEvent:
    """One stored event, from get-event or a push (the library's two record types)."""

    index: int
    type: int
    granted: bool
    door: int
    card: int
    timestamp: dt.datetime | None
    reason: int

    @classmethod
    def from_get_event(cls, r: Any) -> ControllerEvent:
        return cls(r.index, r.event_type, r.access_granted, r.door, r.card, r.timestamp, r.reason)

    @classmethod
    def from_push(cls, e: Any) -> ControllerEvent:
        return cls(
            e.event_index,
            e.event_type,
            e.event_access_granted,
            e.event_door,
            e.event_card,
            e.event_timestamp,
            e.event_reason,
        )


class UhppoteDoor:
    """One door of a controller, as a command target (its door id)."""

    def __init__(self, controller: UhppoteDriver, number: int, door_id: str) -> None:
        self.device_id = door_id
        self.number = number
        self.health = controller.health
        self._controller = controller

    def actions(self) -> frozenset[str]:
        return frozenset({ACTION_OPEN, ACTION_SET_MODE})

    async def run(self) -> None:
        raise RuntimeError("a door is run by its controller's driver")

    async def execute(self, action: DeviceAction) -> None:
        await self._controller.execute_door(self.number, action)


class UhppoteDriver:
    """One controller (module docstring)."""

    def __init__(
        self,
        config: UhppoteConfig,
        *,
        sink: ReadingSink,
        clock: Clock,
        state: DeviceStateStore,
        zone: dt.tzinfo,
        clock_trusted: Callable[[], bool],
        access: AccessList | None = None,
    ) -> None:
        """With ``access``, the driver also keeps the controller's card table (``CardSync``)."""
        self.config = config
        self.device_id = config.id
        self.health = DeviceHealth(config.id, sink, clock)
        self._sink = sink
        self.clock = self._clock = clock
        self._state = state
        self.zone = self._zone = zone
        self._clock_trusted = clock_trusted
        self.link = UhppoteLink(
            config.serial,
            address=config.address,
            broadcast=config.broadcast,
            timeout_s=config.timeout_ms / 1000,
        )
        self._doors = {d: UhppoteDoor(self, n, d) for n, d in config.doors.items()}
        self._modes = dict.fromkeys(config.doors, MODE_CODES["normal"])
        self._wake = asyncio.Event()
        self._pushes: list[ControllerEvent] = []
        self._want_catch_up = True
        self._configured = False
        self._failures = 0
        self._processed = 0  # the last event index turned into readings
        self._durable = 0  # the last one made durable (in the gateway's state)
        self._staged = 0  # the last one queued to be made durable
        self._bookmarks: asyncio.Queue[tuple[int, str, Awaitable[None] | None]] = asyncio.Queue()
        self._adopting = False
        self._adoption_counted = 0
        self._adoption_sent = 0
        self.list_version: int | None = None
        self._next_time_check = 0.0
        self._remote_waiters: dict[int, list[asyncio.Future[int]]] = {}
        # The unlock delay is the door's, shared: an opening with its own hold
        # (set, open, restore) must not interleave with another or a mode change.
        self._door_control = asyncio.Lock()
        self.listen_address: tuple[str, int] | None = None
        self.processed_event = asyncio.Event()  # set whenever readings were made (tests, bench)
        self.card_sync: CardSync | None = None
        if access is not None:  # the gateway has an access list: keep the card table
            self.card_sync = CardSync(self, access, check_interval_s=config.card_check_s)

    # ---------------------------------------------------------------- api

    def actions(self) -> frozenset[str]:
        return frozenset()  # commands address the doors (CONTRACT.md 1.1)

    def doors(self) -> Mapping[str, Driver]:
        return self._doors

    async def execute(self, action: DeviceAction) -> None:
        raise ActionNotSupportedError(self.device_id, "address a door id, not the controller")

    async def run(self) -> None:
        """Listen and catch up until cancelled; an unreachable controller is a state."""
        listener = EventListener(self.config.listen, self._on_push)
        self.listen_address = await listener.open()
        try:
            await self._load_state()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._events(), name=f"uhppote-events-{self.device_id}")
                group.create_task(
                    self._bookmark_writer(), name=f"uhppote-bookmark-{self.device_id}"
                )
                if self.card_sync is not None:
                    group.create_task(self.card_sync.run(), name=f"uhppote-cards-{self.device_id}")
        finally:
            listener.close()

    async def _events(self) -> None:
        while True:
            try:
                await self._cycle()
                self._answered()
            except TransportError as exc:
                self._failed(exc)
            wait = self.config.retry_s if self._failures else self.config.catch_up_interval_s
            wait = min(wait, max(0.0, self._next_time_check - self._clock.monotonic()))
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                self._want_catch_up = True  # the timer: pushes may have been lost
            self._wake.clear()

    # -------------------------------------------------------------- state

    async def _load_state(self) -> None:
        stored = await self._state.get(self.device_id, KEY_EVENTS)
        serial, index = _split_serial_value(stored)
        if serial == self.config.serial:
            self._processed = self._durable = self._staged = index
            self._adopting = False
        else:
            self._adopting = True  # new controller (or replaced): the controller's bookmark
        for number in self.config.doors:
            mode = await self._state.get(self.device_id, f"mode:{number}")
            if mode in MODE_CODES:
                self._modes[number] = MODE_CODES[mode]
        written = await self._state.get(self.device_id, KEY_LIST_VERSION)
        owner, _, value = (written or "").partition(":")
        ours = owner == str(self.config.serial) and value != ""
        self.list_version = int(value) if ours else None

    def _stage_bookmark(self) -> None:
        """Queue the processed index behind its readings; the writer task finishes the job."""
        if self._processed == self._staged:
            return
        index = self._staged = self._processed
        value = f"{self.config.serial}:{index}"
        staged: Awaitable[None] | None = None
        if isinstance(self._state, StagedStateStore):
            staged = self._state.stage(self.device_id, KEY_EVENTS, value)
        self._bookmarks.put_nowait((index, value, staged))

    async def _bookmark_writer(self) -> None:
        """Once a bookmark is durable (with its readings), move the controller's too."""
        while True:
            index, value, staged = await self._bookmarks.get()
            if staged is None:  # a store that cannot stage: written now, after the readings
                await self._state.put(self.device_id, KEY_EVENTS, value)
            else:
                await staged
            self._durable = index
            if self._bookmarks.qsize():
                continue  # a later one is coming: move the controller's once, for that
            if self._adopting:
                self._adopting = False
                self._status(
                    f"adopted: {self._adoption_sent} events sent, {self._adoption_counted} older "
                    f"than the {self.config.backfill_h:g} h backfill counted, not sent",
                    Priority.ROUTINE,
                    extra={"counted": self._adoption_counted, "sent": self._adoption_sent},
                )
            try:
                await self.link.call("set_event_index", index)
            except TransportError:
                self.health.count("bookmark_failures")

    # -------------------------------------------------------------- cycle

    async def _cycle(self) -> None:
        if not self._configured:
            await self._configure()
        await self._drain_pushes()
        if self._want_catch_up:
            self._want_catch_up = False
            await self._catch_up()
        self._stage_bookmark()
        if self._clock.monotonic() >= self._next_time_check:
            await self._check_time()

    async def _configure(self) -> None:
        if self.config.address is None:
            found = await self.link.discover()
            if found is not None:
                self.link.address = found
        await self.link.call("get_controller")
        if self._adopting:
            reply = await self.link.call("get_event_index")
            self._processed = self._durable = self._staged = int(reply.event_index)
        host, port = self._advertised()
        await self.link.call("set_listener", ipaddress.IPv4Address(host), port, 0)
        await self.link.call("record_special_events", True)
        async with self._door_control:
            for number in self.config.doors:
                await self._set_door(number, self._modes[number], self.config.door_delay_s)
        self._next_time_check = 0.0
        self._want_catch_up = True
        self._configured = True
        if self.card_sync is not None:
            self.card_sync.controller_configured()

    def _advertised(self) -> tuple[str, int]:
        assert self.listen_address is not None
        host, port = self.listen_address
        if self.config.advertise is not None:
            return self.config.advertise, port
        if host != "0.0.0.0":
            return host, port
        target = split_address(self.link.address or self.config.broadcast, DEFAULT_PORT)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(target)  # no packet is sent: only the route is looked up
            return str(probe.getsockname()[0]), port

    async def _set_door(self, number: int, mode: int, delay: int) -> None:
        reply = await self.link.call("set_door_control", number, mode, delay)
        if reply.mode != mode:
            raise DeviceError(self.device_id, f"door {number} kept mode {reply.mode}, not {mode}")

    # ------------------------------------------------------------- events

    def _on_push(self, event: Any) -> None:
        if event.controller != self.config.serial:
            return
        self.health.count("pushes")
        self._pushes.append(ControllerEvent.from_push(event))
        self._wake.set()

    async def _drain_pushes(self) -> None:
        pushes, self._pushes = sorted(self._pushes, key=lambda e: e.index), []
        for event in pushes:
            if event.index <= self._processed:
                continue  # a repeat (auto-send) or already caught up
            if event.index == self._processed + 1 and not self._want_catch_up:
                self._take(event)
                continue
            if event.index > self._processed + 1:
                self.health.count("push_gaps")  # pushes were lost: fetch what is missing
            self._want_catch_up = True

    async def _catch_up(self) -> None:
        status = await self.link.call("get_status")
        newest = int(status.event_index)
        if newest < self._processed:
            # The log restarted (a replaced or wiped controller with the same serial).
            self._status(f"event log restarted at {newest} (was {self._processed})", Priority.ALARM)
            self._processed = 0
        index = self._processed + 1
        while index <= newest:
            reply = await self.link.call("get_event", index)
            if reply.event_type == TYPE_OVERWRITTEN:
                first = await self._first_retained(index, newest)
                self._gap(index, first - 1)
                index = first
                continue
            if reply.index != index:
                break  # not there (yet)
            self._take(ControllerEvent.from_get_event(reply))
            index += 1

    async def _first_retained(self, overwritten: int, newest: int) -> int:
        """The oldest retained index above a known overwritten one (binary search)."""
        lo, hi = overwritten, newest + 1  # lo overwritten; hi retained (or past the end)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            reply = await self.link.call("get_event", mid)
            if reply.event_type == TYPE_OVERWRITTEN:
                lo = mid
            else:
                hi = mid
        return hi

    def _gap(self, first: int, last: int) -> None:
        count = last - first + 1
        self.health.count("events_overwritten", count)
        self._status(
            f"events {first}..{last} were overwritten on the controller before they were read",
            Priority.ALARM,
            extra={"gap": {"from_index": first, "to_index": last, "count": count}},
        )
        self._processed = last

    def _take(self, event: ControllerEvent) -> None:
        """Turn one stored event into its reading (or count it, in a first adoption)."""
        self._processed = event.index
        now_wall, now_mono = self._clock.wall(), self._clock.monotonic()
        wall = now_wall
        if not is_empty_timestamp(event.timestamp):
            assert event.timestamp is not None
            wall = controller_time_to_wall(event.timestamp, self._zone)
        if self._adopting:
            if wall < now_wall - self.config.backfill_h * 3600:
                self._adoption_counted += 1
                return
            self._adoption_sent += 1
        meaning = self._refine(classify(event.reason, event.granted), event)
        self.health.count("events")
        mono = now_mono - max(0.0, now_wall - wall)
        if meaning.cls is EventClass.STATUS:
            power = event.reason in (REASON_POWER_ON, REASON_RESET)
            if power and self.card_sync is not None:
                self.card_sync.controller_reset()
            if power:
                self._configured = False  # listener and special events may be gone
                self._wake.set()
            self._put(ReadingType.DEVICE_STATUS, _status_data(meaning.detail, event), wall, mono)
            return
        door = self.config.doors.get(event.door, f"{self.device_id}-door-{event.door}")
        data: dict[str, Any] = {
            "door": door,
            "event": meaning.event,
            "card": card_to_hex(event.card) if meaning.card_matters else None,
            "controller": self.device_id,
            "event_index": event.index,
        }
        if meaning.event in ("granted", "denied"):
            data["reason"] = meaning.reason
            data["list_version"] = self.list_version
            if meaning.controller_reason is not None:
                data["controller_reason"] = meaning.controller_reason
        alarm = meaning.event in ("forced", "held_open")
        self._put(ReadingType.DOOR_EVENT, data, wall, mono, alarm=alarm)
        if meaning.event == "remote_open":
            for waiter in self._remote_waiters.pop(event.door, []):
                if not waiter.done():
                    waiter.set_result(event.index)

    def _refine(self, meaning: Meaning, event: ControllerEvent) -> Meaning:
        """A generic denial (18) of a card the controller holds is its dates, or its rule.

        The controller says 18 both for an unknown card and for one outside its
        dates; the table written to it tells them apart.
        """
        held = self.card_sync.held if self.card_sync is not None else None
        if meaning.reason != "not_listed" or held is None or event.timestamp is None:
            return meaning
        record = held.get(event.card)
        if record is None:
            return meaning
        day = event.timestamp.date()
        if day < record.start:
            reason, code = "not_yet_valid", None
        elif day > record.end:
            reason, code = "expired", None
        else:
            reason, code = "controller_rule", event.reason
        return Meaning(EventClass.DOOR, "denied", reason, controller_reason=code, card_matters=True)

    def _put(
        self,
        type_: ReadingType,
        data: Mapping[str, Any],
        wall: float,
        mono: float,
        *,
        alarm: bool = False,
    ) -> None:
        priority = Priority.ALARM if alarm else Priority.ROUTINE
        self._sink.put(Reading(self.device_id, type_, data, priority, wall, mono))
        self.processed_event.set()

    async def record_list_version(self, version: int | None) -> None:
        """The list version now fully written to the controller (durable, then in events)."""
        value = "" if version is None else str(version)
        await self._state.put(self.device_id, KEY_LIST_VERSION, f"{self.config.serial}:{value}")
        self.list_version = version

    def status(
        self, detail: str, priority: Priority, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        """A device.status reading about the controller (gaps, adoption, sync, drift)."""
        self._status(detail, priority, extra=extra)

    def _status(
        self, detail: str, priority: Priority, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        data: dict[str, Any] = {"state": "online", "detail": detail, **(extra or {})}
        self._put(
            ReadingType.DEVICE_STATUS,
            data,
            self._clock.wall(),
            self._clock.monotonic(),
            alarm=priority is Priority.ALARM,
        )

    # --------------------------------------------------------------- time

    async def _check_time(self) -> None:
        self._next_time_check = self._clock.monotonic() + self.config.time_check_interval_s
        reply = await self.link.call("get_time")
        if reply.datetime is None:
            drift = float("inf")
        else:
            drift = controller_time_to_wall(reply.datetime, self._zone) - self._clock.wall()
        trusted = self._clock_trusted()
        if trusted and abs(drift) > self.config.drift_alarm_s:
            self.health.count("clock_drift_alarms")
            self._status(
                f"controller clock off by {drift:+.0f} s (bound {self.config.drift_alarm_s:g} s)",
                Priority.ALARM,
                extra={"drift_s": None if drift == float("inf") else round(drift)},
            )
        if trusted and abs(drift) > SET_TIME_TOLERANCE_S:
            now = wall_to_controller_time(self._clock.wall(), self._zone)
            await self.link.call("set_time", now)
            self.health.count("clock_sets")

    # ------------------------------------------------------------- doors

    async def execute_door(self, number: int, action: DeviceAction) -> None:
        """``door.open`` (via open-door) or ``door.set_mode`` (via door control) on one door.

        The parameters were checked by the command layer (``drivers.actions``).

        Raises:
            ActionNotSupportedError: another action.
            DeviceError: a refusal, or no remote-open event recorded.
            DeviceOffline, DeviceTimeout: no reply.
        """
        with device_errors(self.device_id):
            if isinstance(action, DoorOpen):
                await self._open(number, action.hold_seconds)
            elif isinstance(action, SetDoorMode):
                mode = action.mode
                async with self._door_control:
                    await self._set_door(number, MODE_CODES[mode], self.config.door_delay_s)
                    self._modes[number] = MODE_CODES[mode]
                # Durable before the command is done: a restart re-applies it, not "normal".
                await self._state.put(self.device_id, f"mode:{number}", mode)
            else:
                raise ActionNotSupportedError(self.device_id, f"unsupported action {action.name!r}")

    async def _open(self, number: int, hold: int) -> None:
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._remote_waiters.setdefault(number, []).append(waiter)
        try:
            async with self._door_control:
                reply = await self._open_for(number, hold)
            if not reply.opened:
                raise DeviceError(self.device_id, f"controller refused to open door {number}")
            self._want_catch_up = True  # the push is a hint: fetch the event if it was lost
            self._wake.set()
            try:
                async with asyncio.timeout(self.config.remote_open_wait_s):
                    await waiter
            except TimeoutError:
                raise DeviceError(
                    self.device_id, f"door {number}: no remote-open event recorded"
                ) from None
        finally:
            waiters = self._remote_waiters.get(number, [])
            if waiter in waiters:
                waiters.remove(waiter)

    async def _open_for(self, number: int, hold: int) -> Any:
        """open-door with the door's unlock delay at ``hold`` for this opening; the reply.

        0x40 has no duration: the controller energises the relay for the delay
        set by 0x80 (PROTOCOL-UHPPOTE.md), read when it opens. So the delay is
        set to ``hold`` first and put back to ``door_delay_s`` after, whatever
        happened; if that fails the next cycle reconfigures every door.
        """
        if hold == self.config.door_delay_s and self._configured:
            return await self.link.call("open_door", number)  # the delay in force already
        restored = False
        try:
            # Inside: a set whose reply was lost may still have been applied.
            await self._set_door(number, self._modes[number], hold)
            return await self.link.call("open_door", number)
        finally:
            try:
                await self._set_door(number, self._modes[number], self.config.door_delay_s)
                restored = True
            except (TransportError, DeviceError) as exc:
                _LOGGER.warning(
                    "uhppote door delay not restored, reconfiguring: device=%s door=%d %s",
                    self.device_id,
                    number,
                    exc,
                )
            finally:
                if not restored:  # also when cancelled: the next cycle sets it again
                    self._configured = False
                    self._wake.set()

    # ------------------------------------------------------------- health

    def _answered(self) -> None:
        self._failures = 0
        self.health.seen()
        if self.health.set_state(DeviceState.ONLINE) and self.card_sync is not None:
            self.card_sync.controller_configured()  # it waits for online: check the table now

    def _failed(self, exc: TransportError) -> None:
        self._failures += 1
        self._configured = False  # reconfigure (listener, time) when it is back
        self.health.count("failures")
        if self._failures >= self.config.offline_after_failures:
            self.health.set_state(DeviceState.OFFLINE, str(exc))


def _split_serial_value(stored: str | None) -> tuple[int | None, int]:
    if not stored or ":" not in stored:
        return None, 0
    serial, _, value = stored.partition(":")
    return int(serial), int(value) if value else 0


def _status_data(detail: str, event: ControllerEvent) -> dict[str, Any]:
    return {"state": "online", "detail": detail, "event_index": event.index}


build_driver = UhppoteDriver
"""The registry's factory for one configured controller: the constructor itself."""
