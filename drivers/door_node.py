"""Door node driver, ``door-node-v1`` (PROTOCOLS.md, "Door node").

A door is a relay/input board and a card reader on one Modbus RTU (or TCP)
bus. With the local access list (``drivers.access``) the gateway is the access
controller, so residents still get in while the network is down.

Two layers:

- ``DoorLogic`` is a pure state machine (no I/O, time passed in, h11 style):
  it turns observations (a card and its decision, the door contact, the exit
  button, a remote open, a mode change) into ``DoorEvent``s and lock
  ``Action``s, and tracks what is legitimate: an opening within
  ``forced_window_s`` of a grant, exit or remote open (or while the lock is
  released, see below) is legitimate, any other is ``forced``; a legitimate
  opening held longer than ``held_open_s`` is ``held_open``.
- ``DoorNodeDriver`` polls the reader's "new card" coil and the board's two
  inputs every ``poll_interval_ms`` on the shared ``ModbusBus``, carries out
  the actions, and emits ``door.event`` readings (CONTRACT.md): ``forced`` and
  ``held_open`` at alarm priority, the rest routine.

Choices beyond PROTOCOLS.md, each for a reason:

- Card path order: read the id, decide, pulse the lock, then re-arm (coil
  1016 = 0), then beep. PROTOCOLS.md lists the re-arm before the decision; the
  re-arm is independent of the decision, and doing it after the pulse takes
  one transaction (about 25 ms at 9600 8N1) out of the card-to-relay path.
  The risk of that order, replaying a card whose re-arm never happened (after
  a crash, a failed write or a bus outage), is closed by the freshness rule:
  a waiting card is acted on only if the reader was seen idle (coil read 0, or
  our re-arm acknowledged) within ``stale_card_ms``. Any other waiting card is
  of unknown age: it is re-armed and discarded, never opens the door.
- The lock is only ever pulsed (the board closes it by itself, even if the
  gateway dies mid-open). ``open`` mode is the one exception, by definition:
  it holds the relay coil on, and leaving it turns the coil off. Because that
  state outlives the gateway, the driver writes the coil to match its mode
  each time the node comes online (so a restart in ``normal`` mode releases a
  relay left held by an earlier ``open``).
- The legitimate window also covers the time the lock is released: a remote
  open held for 30 s makes an opening at 15 s legitimate, not ``forced``. For
  the same reason ``held_open`` counts from the later of the opening and the
  lock closing again.
- The mode a remote ``door.set_mode`` chose is durable: it is put in the
  gateway's ``DeviceStateStore`` (key ``mode``) before the command is done,
  and read back when the driver starts, where it wins over the configured
  ``mode`` (a lockdown must survive a crash or a power cut). The mode in force
  is in the device's status entry (``health.attributes["mode"]``).
- ``locked`` mode refuses cards only: the exit button (people must always be
  able to leave) and a signed remote ``door.open`` still open the door.
- ``held_open`` is judged on polls: while the node is offline, nothing is.
- The first contact state seen after start is taken as it is, with no event
  (its history is unknown). A change seen across a bus outage is a normal
  edge: a door opened during the outage is still reported, and as ``forced``
  if nothing legitimate preceded it.

Longer than 400 lines because the door's decisions (``DoorLogic``: grants, forced, held
open, modes) are a pure state machine here next to the driver and its config, and are
tested without a bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from drivers.access import mask_card
from drivers.access_rules import Decision, DecisionReason, DoorAccess
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
    ReadingSink,
    ReadingType,
    device_errors,
    make_reading,
)
from drivers.codecs.door_node_map import (
    DoorNodeMap,
    DoorNodeMapError,
    decode_card_id,
    pulse_tenths,
)
from drivers.config.door_node import DoorMode, DoorNodeConfig
from drivers.transports.errors import TransportError
from drivers.transports.modbus import BusPriority, ModbusExceptionError

if TYPE_CHECKING:
    from drivers.transports.bus_pool import BusPool
    from drivers.transports.modbus import ModbusBus

_LOGGER = logging.getLogger(__name__)

"""``door.open`` ``hold_seconds`` bounds and default (CONTRACT.md, "Commands")."""

ACTION_OPEN = "door.open"
ACTION_SET_MODE = "door.set_mode"
MODE_KEY = "mode"
"""The ``DeviceStateStore`` key of the door's mode."""


class DoorEventKind(StrEnum):
    """The ``event`` values of a ``door.event`` reading (CONTRACT.md)."""

    GRANTED = "granted"
    DENIED = "denied"
    OPENED = "opened"
    CLOSED = "closed"
    EXIT_BUTTON = "exit_button"
    REMOTE_OPEN = "remote_open"
    FORCED = "forced"
    HELD_OPEN = "held_open"


ALARM_EVENTS = frozenset({DoorEventKind.FORCED, DoorEventKind.HELD_OPEN})


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """One door event; ``decision`` is set for card decisions only."""

    kind: DoorEventKind
    card: str | None = None
    decision: Decision | None = None

    @property
    def reason(self) -> str | None:
        return self.decision.reason.value if self.decision is not None else None

    @property
    def priority(self) -> Priority:
        return Priority.ALARM if self.kind in ALARM_EVENTS else Priority.ROUTINE


@dataclass(frozen=True, slots=True)
class PulseLock:
    """Pulse the lock relay on for ``tenths`` x 100 ms (the board closes it itself)."""

    tenths: int


@dataclass(frozen=True, slots=True)
class HoldLock:
    """Hold the lock relay on (``open`` mode) or turn it off."""

    on: bool


@dataclass(frozen=True, slots=True)
class Beep:
    """Accept or reject beep on the reader."""

    accept: bool


Action = PulseLock | HoldLock | Beep


@dataclass(frozen=True, slots=True)
class Step:
    """What one observation produced: events to report, actions to carry out in order."""

    events: tuple[DoorEvent, ...] = ()
    actions: tuple[Action, ...] = ()


@dataclass(slots=True)
class DoorLogic:
    """The door's policy as a pure state machine; every method takes ``now`` (monotonic s)."""

    pulse_ms: int = 3000
    forced_window_s: float = 10.0
    held_open_s: float = 30.0
    stale_card_s: float = 2.0
    mode: DoorMode = DoorMode.NORMAL
    contact_open: bool | None = None
    """None until the first read of the contact."""
    exit_pressed: bool = False
    _legit_until: float = -math.inf
    _unlocked_until: float = -math.inf
    _held_deadline: float | None = None
    _held_reported: bool = False
    _reader_idle_at: float | None = None
    _pulse_tenths: int = field(init=False)

    def __post_init__(self) -> None:
        self._pulse_tenths = pulse_tenths(self.pulse_ms)
        if self.mode is DoorMode.OPEN:
            self._unlocked_until = math.inf

    # -- the card reader ------------------------------------------------------

    def reader_idle(self, now: float) -> None:
        """The "new card" coil read 0, or our re-arm of it was acknowledged."""
        self._reader_idle_at = now

    def card_waiting(self, now: float) -> bool:
        """The "new card" coil read 1: return whether to act on the card.

        The card arrived after the last poll that saw the reader idle, so that
        poll bounds its age: it is fresh when that was within ``stale_card_s``,
        even if polls failed in between (a noise burst, a short glitch). Any
        other card (first poll after start, after a long outage, a card already
        decided whose re-arm failed) is of unknown age and must be re-armed and
        discarded. A fresh card stays fresh until ``card`` decides it (a failed
        read of its id is tried again on the next poll).
        """
        fresh = self._reader_idle_at is not None and now - self._reader_idle_at <= self.stale_card_s
        if not fresh:
            self._reader_idle_at = None
        return fresh

    def card(self, card: str, decision: Decision, now: float) -> Step:
        """A fresh card and the access list's decision on it (the card is consumed)."""
        self._reader_idle_at = None
        if self.mode is DoorMode.LOCKED and decision.reason is not DecisionReason.DOOR_LOCKED:
            # The driver asks with door_refuses_cards; this holds even if it did not.
            decision = Decision(False, DecisionReason.DOOR_LOCKED, decision.list_version)
        if not decision.granted:
            return Step((DoorEvent(DoorEventKind.DENIED, card, decision),), (Beep(accept=False),))
        event = DoorEvent(DoorEventKind.GRANTED, card, decision)
        if self.mode is DoorMode.OPEN:
            # The relay is held on: a pulse would end the hold when it runs out.
            return Step((event,), (Beep(accept=True),))
        self._unlock(now, self.pulse_ms / 1000)
        return Step((event,), (PulseLock(self._pulse_tenths), Beep(accept=True)))

    # -- the relay board's inputs ---------------------------------------------

    def inputs(self, contact_open: bool, exit_pressed: bool, now: float) -> Step:
        """One read of the door contact (True = open) and exit button (True = pressed)."""
        events: list[DoorEvent] = []
        actions: list[Action] = []
        # The button before the contact: pressed and pushed open within one
        # poll is a legitimate exit, not a forced door.
        if exit_pressed and not self.exit_pressed:
            events.append(DoorEvent(DoorEventKind.EXIT_BUTTON))
            if self.mode is not DoorMode.OPEN:
                self._unlock(now, self.pulse_ms / 1000)
                actions.append(PulseLock(self._pulse_tenths))
        self.exit_pressed = exit_pressed
        previous = self.contact_open
        self.contact_open = contact_open
        if previous is not None and contact_open != previous:
            if contact_open:
                events.append(DoorEvent(DoorEventKind.OPENED))
                if self._is_legitimate(now):
                    self._held_deadline = max(now, self._unlocked_until) + self.held_open_s
                else:
                    events.append(DoorEvent(DoorEventKind.FORCED))
            else:
                events.append(DoorEvent(DoorEventKind.CLOSED))
                self._held_deadline = None
                self._held_reported = False
        events.extend(self.tick(now).events)
        return Step(tuple(events), tuple(actions))

    def tick(self, now: float) -> Step:
        """Time passing: ``held_open`` once per legitimate opening held too long."""
        if (
            self.contact_open
            and self.mode is not DoorMode.OPEN
            and self._held_deadline is not None
            and not self._held_reported
            and now >= self._held_deadline
        ):
            self._held_reported = True
            return Step((DoorEvent(DoorEventKind.HELD_OPEN),))
        return Step()

    # -- commands -------------------------------------------------------------

    def remote_open(self, hold_seconds: int, now: float) -> Step:
        """``door.open``: pulse the lock for ``hold_seconds`` (no pulse in ``open`` mode)."""
        event = DoorEvent(DoorEventKind.REMOTE_OPEN)
        if self.mode is DoorMode.OPEN:
            return Step((event,))
        self._unlock(now, hold_seconds)
        return Step((event,), (PulseLock(hold_seconds * 10),))

    def mode_actions(self, mode: DoorMode) -> tuple[Action, ...]:
        """The relay writes that switching to ``mode`` needs (nothing changes yet)."""
        if mode is DoorMode.OPEN:
            return (HoldLock(on=True),)
        if self.mode is DoorMode.OPEN:
            return (HoldLock(on=False),)
        return ()

    def set_mode(self, mode: DoorMode, now: float) -> None:
        """Commit a mode, once ``mode_actions`` were carried out."""
        leaving_open = self.mode is DoorMode.OPEN and mode is not DoorMode.OPEN
        self.mode = mode
        if mode is DoorMode.OPEN:
            self._unlocked_until = math.inf
        elif leaving_open:
            self._unlocked_until = now
            self._legit_until = max(self._legit_until, now + self.forced_window_s)
            if self.contact_open:
                # Held open by the mode until now: the held_open clock starts here.
                self._held_deadline = now + self.held_open_s
                self._held_reported = False

    def hold_action(self) -> HoldLock:
        """The relay coil state this mode wants (written whenever the node comes online)."""
        return HoldLock(on=self.mode is DoorMode.OPEN)

    # -- internals ------------------------------------------------------------

    def _unlock(self, now: float, seconds: float) -> None:
        self._legit_until = max(self._legit_until, now + self.forced_window_s)
        self._unlocked_until = max(self._unlocked_until, now + seconds)

    def _is_legitimate(self, now: float) -> bool:
        return now <= self._legit_until or now <= self._unlocked_until


class DoorNodeDriver:
    """One door node on a shared Modbus bus (module docstring)."""

    def __init__(
        self,
        config: DoorNodeConfig,
        *,
        sink: ReadingSink,
        clock: Clock,
        bus: ModbusBus,
        access: DoorAccess,
        state: DeviceStateStore | None = None,
    ) -> None:
        self.config = config
        self.device_id = config.id
        self.door = config.door_name
        self.health = DeviceHealth(config.id, sink, clock)
        self._sink = sink
        self._clock = clock
        self._bus = bus
        self._access = access
        self._map = DoorNodeMap(config.relay_slave, config.reader_slave, config.lock_relay)
        self.logic = DoorLogic(
            pulse_ms=config.pulse_ms,
            forced_window_s=config.forced_window_s,
            held_open_s=config.held_open_s,
            stale_card_s=config.stale_card_ms / 1000,
            mode=config.mode,
        )
        self._liveness = config.liveness()
        self._state = state
        self._mode_restored = state is None
        self.health.attributes["mode"] = self.logic.mode.value
        self._hold_synced = False
        # Commands and the poll loop both change the mode and the relay:
        # one at a time, so a mode write never interleaves with a card's pulse.
        self._lock = asyncio.Lock()

    def actions(self) -> frozenset[str]:
        return frozenset({ACTION_OPEN, ACTION_SET_MODE})

    async def run(self) -> None:
        """Poll until cancelled; bus failures are states (offline), not exceptions."""
        interval_s = self.config.poll_interval_ms / 1000
        loop = asyncio.get_running_loop()
        await self._restore_mode()
        while True:
            started = loop.time()
            await self.poll_once()
            await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))

    async def _restore_mode(self) -> None:
        """Take the mode a remote set_mode left, if any (before the first relay write)."""
        if self._mode_restored or self._state is None:
            return
        try:
            stored = await self._state.get(self.device_id, MODE_KEY)
        except Exception:  # the door must work without its stored mode
            _LOGGER.warning(
                "door mode not restored, using the configured one: device=%s mode=%s",
                self.device_id,
                self.logic.mode.value,
                exc_info=True,
            )
            stored = None
        async with self._lock:
            if self._mode_restored:
                return  # a set_mode came in meanwhile: it is newer
            self._mode_restored = True
            if stored is None:
                return
            try:
                mode = DoorMode(stored)
            except ValueError:
                _LOGGER.warning("door mode stored is unknown, ignored: device=%s", self.device_id)
                return
            if mode is not self.logic.mode:
                self.logic.set_mode(mode, self._clock.monotonic())
                self.health.attributes["mode"] = mode.value
            _LOGGER.info("door mode restored: device=%s mode=%s", self.device_id, mode.value)

    async def poll_once(self) -> None:
        """One poll cycle: the reader, then the door inputs; never raises for the bus."""
        self._access.refresh()
        try:
            async with self._lock:
                if not self._hold_synced:
                    await self._write_hold(self.logic.hold_action())
                    self._hold_synced = True
                await self._poll_reader()
                bits = await self._bus.read_discrete_inputs(
                    self._map.relay_slave, self._map.read_door_inputs().address, 2
                )
                step = self.logic.inputs(bits[0], bits[1], self._clock.monotonic())
                await self._carry_out(step)
        except (ModbusExceptionError, DeviceError, DoorNodeMapError) as exc:
            # The node answered, but with a Modbus exception or an impossible value.
            self._answered()
            self.health.count("device_errors")
            self.health.set_state(DeviceState.ERROR, str(exc))
        except TransportError as exc:
            self._failed(exc)
        else:
            self._answered()
            self.health.set_state(DeviceState.ONLINE)

    async def _poll_reader(self) -> None:
        request = self._map.poll_new_card()
        waiting = (await self._bus.read_coils(request.slave, request.address, 1))[0]
        now = self._clock.monotonic()
        if not waiting:
            self.logic.reader_idle(now)
            return
        if not self.logic.card_waiting(now):
            # Unknown age (start, outage, failed re-arm): never let it open the door.
            self.health.count("cards_discarded_stale")
            _LOGGER.info("door node: discarded a card of unknown age, device=%s", self.device_id)
            await self._rearm()
            return
        ids = self._map.read_card_id()
        registers = await self._bus.read_holding_registers(
            ids.slave, ids.address, ids.value, priority=BusPriority.COMMAND
        )
        card = decode_card_id(registers)
        if card is None:
            self.health.count("cards_empty")
            await self._rearm()
            return
        decision = self._access.decide(
            card, self.door, door_refuses_cards=self.logic.mode is DoorMode.LOCKED
        )
        step = self.logic.card(card, decision, self._clock.monotonic())
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "door card: device=%s card=%s event=%s reason=%s",
                self.device_id,
                mask_card(card),
                step.events[0].kind,
                step.events[0].reason,
            )
        lock_actions = [a for a in step.actions if not isinstance(a, Beep)]
        beeps = [a for a in step.actions if isinstance(a, Beep)]
        try:
            # The lock first: card-to-relay latency is what the resident feels.
            for action in lock_actions:
                await self._act(action)
            await self._rearm()
        finally:
            self._emit(step.events)
        for beep in beeps:
            await self._act(beep)

    async def _rearm(self) -> None:
        request = self._map.rearm()
        await self._bus.write_coil(
            request.slave, request.address, False, priority=BusPriority.COMMAND
        )
        self.logic.reader_idle(self._clock.monotonic())

    async def _carry_out(self, step: Step) -> None:
        try:
            for action in step.actions:
                await self._act(action)
        finally:
            # What the door did is reported even when the pulse that follows fails.
            self._emit(step.events)

    async def _act(self, action: Action) -> None:
        """Carry out one action; an exception response is the node refusing (DeviceError)."""
        try:
            await self._act_on_bus(action)
        except ModbusExceptionError as exc:
            raise DeviceError(self.device_id, exc.reason) from exc

    async def _act_on_bus(self, action: Action) -> None:
        if isinstance(action, PulseLock):
            request = self._map.pulse_lock(action.tenths)
            await self._bus.write_coil_value(
                request.slave, request.address, request.value, priority=BusPriority.COMMAND
            )
        elif isinstance(action, HoldLock):
            await self._write_hold(action)
        else:
            request = self._map.beep(accept=action.accept)
            await self._bus.write_coil(
                request.slave, request.address, True, priority=BusPriority.COMMAND
            )

    async def _write_hold(self, action: HoldLock) -> None:
        request = self._map.hold_lock(action.on)
        await self._bus.write_coil(
            request.slave, request.address, action.on, priority=BusPriority.COMMAND
        )

    def _emit(self, events: tuple[DoorEvent, ...]) -> None:
        for event in events:
            data: dict[str, Any] = {
                "door": self.door,
                "event": event.kind.value,
                "card": event.card,
            }
            if event.decision is not None:
                data["reason"] = event.decision.reason.value
                data["list_version"] = event.decision.list_version
            self._sink.put(
                make_reading(
                    self._clock, self.device_id, ReadingType.DOOR_EVENT, data, event.priority
                )
            )

    def _answered(self) -> None:
        self._liveness.answered(self._clock.monotonic())
        self.health.seen()

    def _failed(self, exc: TransportError) -> None:
        self.health.count("poll_failures")
        if self._liveness.failed(self._clock.monotonic()):
            # Write the relay to match the mode again once the node is back.
            self._hold_synced = False
            self.health.set_state(DeviceState.OFFLINE, str(exc))

    async def execute(self, action: DeviceAction) -> None:
        """``door.open`` or ``door.set_mode``, parameters already checked by the command layer.

        Raises:
            ActionNotSupportedError: another action.
            DeviceOffline, DeviceTimeout: the bus failed or the node did not answer.
            DeviceError: a Modbus exception from the node.
        """
        with device_errors(self.device_id):
            if isinstance(action, DoorOpen):
                step = self.logic.remote_open(action.hold_seconds, self._clock.monotonic())
                # Not under self._lock: a command must not wait for a poll cycle;
                # the bus orders it ahead of queued polls by priority.
                for pulse in step.actions:
                    await self._act(pulse)
                self._emit(step.events)
            elif isinstance(action, SetDoorMode):
                mode = DoorMode(action.mode)
                async with self._lock:
                    for write in self.logic.mode_actions(mode):
                        await self._act(write)
                    if self._state is not None:
                        # Durable before done: a lockdown must survive a restart.
                        await self._state.put(self.device_id, MODE_KEY, mode.value)
                    self._mode_restored = True
                    self.logic.set_mode(mode, self._clock.monotonic())
                    self.health.attributes["mode"] = mode.value
                _LOGGER.info("door mode: device=%s mode=%s", self.device_id, mode.value)
            else:
                raise ActionNotSupportedError(self.device_id, f"unsupported action {action.name!r}")


def build_driver(
    config: DoorNodeConfig,
    *,
    sink: ReadingSink,
    clock: Clock,
    buses: BusPool,
    access: DoorAccess,
    state: DeviceStateStore | None = None,
) -> Driver:
    """The door node driver on the shared bus of its transport; ``state`` keeps its mode."""
    return DoorNodeDriver(
        config,
        sink=sink,
        clock=clock,
        bus=buses.get(config.transport),
        access=access,
        state=state,
    )
