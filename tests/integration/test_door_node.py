"""The door node driver against its simulator, over a real pty and a real ModbusBus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from drivers.access_file import FileAccessList
from drivers.access_rules import DoorAccess, WallTime
from drivers.actions import DoorOpen, SetDoorMode
from drivers.base import DeviceError, DeviceState, Priority, Reading, ReadingType, SystemClock
from drivers.codecs.door_node_map import NEW_CARD_COIL
from drivers.door_node import DoorNodeConfig, DoorNodeDriver, build_driver
from drivers.sim.door_node import DoorNodeSimulator, WriteKind
from drivers.transports.bus_pool import BusPool
from drivers.transports.errors import TransportError
from drivers.transports.modbus import BusPriority, ModbusBus
from tests.devices import stop_tasks
from tests.fakes import WAIT_S, RecordingSink, typed

pytestmark = pytest.mark.integration

KNOWN = "04A1B2C3"
UNKNOWN = "0BADC0DE"
DOOR = "door-east-1"


class DoorSink(RecordingSink):
    """Door events by name."""

    def door_events(self, event: str | None = None) -> list[Reading]:
        return [
            r
            for r in self.of_type(ReadingType.DOOR_EVENT)
            if event is None or r.data["event"] == event
        ]

    async def door_event(self, event: str) -> Reading:
        return await self.wait_for(typed(ReadingType.DOOR_EVENT, event=event))


@dataclass
class Rig:
    sim: DoorNodeSimulator
    driver: DoorNodeDriver
    bus: ModbusBus
    sink: DoorSink
    access: DoorAccess
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.sim.wait_until(predicate)

    async def online(self) -> None:
        """The driver has polled the node once, so it knows the door's state."""
        await self.sink.status(DeviceState.ONLINE)


@contextlib.asynccontextmanager
async def make_rig(
    tmp_path: Path,
    *,
    start_driver: bool = True,
    wire_timing: bool = False,
    before_start: Callable[[DoorNodeSimulator], None] | None = None,
    access: DoorAccess | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    cards = tmp_path / "access.cards"
    cards.write_text(f"{KNOWN}  # test resident\n", encoding="utf-8")
    raw: dict[str, Any] = {
        "id": DOOR,
        "kind": "door_node",
        "simulate": True,
        "transport": {"type": "modbus_rtu", "timeout_ms": 200, "retries": 0},
        "poll_interval_ms": 50,
    }
    raw.update(options)
    config = DoorNodeConfig.model_validate(raw)
    sim = DoorNodeSimulator(config, tmp_path, ambient=False, wire_timing=wire_timing)
    endpoint = await sim.start()
    where: dict[str, Any] = (
        {"port": endpoint.port}
        if endpoint.port is not None
        else {"host": endpoint.host, "port": endpoint.tcp_port}
    )
    config = config.model_copy(update={"transport": config.transport.model_copy(update=where)})
    pool = BusPool(slave_probe_initial_s=0.2, slave_probe_max_s=0.5)
    sink = DoorSink()
    if access is None:
        access = DoorAccess(FileAccessList(cards), WallTime(SystemClock()), UTC)
    driver = build_driver(config, sink=sink, clock=SystemClock(), buses=pool, access=access)
    assert isinstance(driver, DoorNodeDriver)
    (bus,) = pool.buses
    rig = Rig(sim, driver, bus, sink, access)
    loop = asyncio.get_running_loop()
    rig.tasks.append(loop.create_task(bus.run(), name="test bus"))
    if before_start is not None:
        before_start(sim)
    if start_driver:
        rig.tasks.append(loop.create_task(driver.run(), name="test door driver"))
    try:
        yield rig
    finally:
        # Users of the bus first, then the bus itself.
        await stop_tasks(*reversed(rig.tasks))
        await sim.stop()


async def test_granted_card_pulses_lock_then_rearms_and_beeps(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
        rig.sim.present_card(KNOWN)
        async with asyncio.timeout(WAIT_S):
            pulse = await pulse_wait
        assert (pulse.relay, pulse.tenths) == (1, 30)  # pulse_ms 3000 -> 30 x 100 ms
        granted = await rig.sink.door_event("granted")
        assert granted.data == {
            "door": DOOR,
            "event": "granted",
            "card": KNOWN,
            "reason": "listed",
            "list_version": None,
        }
        assert granted.priority is Priority.ROUTINE
        await rig.until(lambda: len(rig.sim.node.beeps) == 1)
        assert rig.sim.node.beeps[0].accept
        # Order on the wire: pulse, re-arm, beep.
        kinds = [(w.kind, w.address) for w in rig.sim.node.writes if w.kind is not WriteKind.RELAY]
        assert kinds == [
            (WriteKind.PULSE, 0x0200),
            (WriteKind.READER, NEW_CARD_COIL),
            (WriteKind.READER, 1014),
        ]
        assert not rig.sim.node.card_waiting
        assert rig.sim.node.relay_on(1)


async def test_granted_card_over_modbus_tcp(tmp_path: Path) -> None:
    async with make_rig(tmp_path, transport={"type": "modbus_tcp", "timeout_ms": 200}) as rig:
        await rig.online()
        pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
        rig.sim.present_card(KNOWN)
        async with asyncio.timeout(WAIT_S):
            pulse = await pulse_wait
        assert (pulse.relay, pulse.tenths) == (1, 30)
        await rig.sink.door_event("granted")


async def test_unknown_card_denied_reject_beep_no_pulse(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        rig.sim.present_card(UNKNOWN)
        denied = await rig.sink.door_event("denied")
        assert denied.data["card"] == UNKNOWN
        assert denied.data["reason"] == "not_listed"
        await rig.until(lambda: len(rig.sim.node.beeps) == 1)
        assert not rig.sim.node.beeps[0].accept
        await rig.until(lambda: not rig.sim.node.card_waiting)
        # A later grant proves the driver went on polling; still no pulse for the unknown card.
        rig.sim.present_card(KNOWN)
        await rig.sink.door_event("granted")
        assert len(rig.sim.node.pulses) == 1
        assert not rig.sink.door_events("forced")


async def test_forced_door_is_an_alarm(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        rig.sim.open_door()
        forced = await rig.sink.door_event("forced")
        assert forced.priority is Priority.ALARM
        assert forced.data == {"door": DOOR, "event": "forced", "card": None}
        assert rig.sink.door_events("opened")
        rig.sim.close_door()
        await rig.sink.door_event("closed")
        assert not rig.sim.node.pulses


async def test_opening_after_grant_is_not_forced(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        rig.sim.present_card(KNOWN)
        await rig.sink.door_event("granted")
        rig.sim.open_door()
        await rig.sink.door_event("opened")
        rig.sim.close_door()
        await rig.sink.door_event("closed")
        assert not rig.sink.door_events("forced")


async def test_exit_button_pulses_lock(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
        rig.sim.press_exit()
        async with asyncio.timeout(WAIT_S):
            pulse = await pulse_wait
        assert (pulse.relay, pulse.tenths) == (1, 30)
        exit_event = await rig.sink.door_event("exit_button")
        assert exit_event.data["card"] is None
        rig.sim.release_exit()
        rig.sim.open_door()
        await rig.sink.door_event("opened")
        assert not rig.sink.door_events("forced")
        assert len(rig.sim.node.pulses) == 1  # one press, one pulse


async def test_locked_mode_denies_cards_but_exit_opens(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        await rig.driver.execute(SetDoorMode("locked"))
        rig.sim.present_card(KNOWN)
        denied = await rig.sink.door_event("denied")
        assert (denied.data["card"], denied.data["reason"]) == (KNOWN, "door_locked")
        await rig.until(lambda: len(rig.sim.node.beeps) == 1)
        assert not rig.sim.node.beeps[0].accept
        assert not rig.sim.node.pulses
        pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
        rig.sim.press_exit()
        async with asyncio.timeout(WAIT_S):
            await pulse_wait
        await rig.sink.door_event("exit_button")


async def test_locked_mode_from_config(tmp_path: Path) -> None:
    async with make_rig(tmp_path, mode="locked") as rig:
        await rig.online()
        rig.sim.present_card(KNOWN)
        denied = await rig.sink.door_event("denied")
        assert denied.data["reason"] == "door_locked"


async def test_open_mode_holds_relay_and_back(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        await rig.driver.execute(SetDoorMode("open"))
        assert rig.sim.node.relay_on(1)
        relay_writes = [w for w in rig.sim.node.writes if w.kind is WriteKind.RELAY]
        # The first is the driver's start-up write (normal mode: relay off).
        assert [(w.address, w.value) for w in relay_writes] == [(0, 0x0000), (0, 0xFF00)]
        rig.sim.open_door()
        await rig.sink.door_event("opened")
        await rig.driver.execute(SetDoorMode("normal"))
        assert not rig.sim.node.relay_on(1)
        assert not rig.sink.door_events("forced")
        assert not rig.sim.node.pulses


async def test_remote_open_pulses_hold_seconds(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
        await rig.driver.execute(DoorOpen(hold_seconds=7))
        async with asyncio.timeout(WAIT_S):
            pulse = await pulse_wait
        assert (pulse.relay, pulse.tenths) == (1, 70)
        event = await rig.sink.door_event("remote_open")
        assert event.data == {"door": DOOR, "event": "remote_open", "card": None}


async def test_card_waiting_before_start_is_discarded(tmp_path: Path) -> None:
    # A card flagged before the driver watched the reader is of unknown age:
    # it is re-armed and must never open the door.
    async with make_rig(tmp_path, before_start=lambda sim: sim.present_card(KNOWN)) as rig:
        await rig.until(lambda: len(rig.sim.node.rearms()) == 1)
        await rig.online()
        assert rig.driver.health.counters.get("cards_discarded_stale") == 1
        assert not rig.sim.node.pulses
        assert not rig.sink.door_events("granted")
        # The next swipe is fresh.
        rig.sim.present_card(KNOWN)
        await rig.sink.door_event("granted")


@pytest.mark.parametrize(
    ("down", "up", "states"),
    [
        # The node stops answering: offline (an alarm), then online again.
        (
            DoorNodeSimulator.stop_answering,
            DoorNodeSimulator.resume_answering,
            ["online", "offline", "online"],
        ),
        (DoorNodeSimulator.unplug, DoorNodeSimulator.replug, None),
    ],
)
async def test_offline_and_back(
    tmp_path: Path,
    down: Callable[[DoorNodeSimulator], None],
    up: Callable[[DoorNodeSimulator], None],
    states: list[str] | None,
) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.online()
        down(rig.sim)
        offline = await rig.sink.status(DeviceState.OFFLINE)
        assert offline.priority is Priority.ALARM
        mark = len(rig.sink.readings)
        up(rig.sim)
        await rig.sink.status(DeviceState.ONLINE, after=mark)
        if states is not None:
            assert rig.sink.states() == states
        # Working again.
        rig.sim.present_card(KNOWN)
        await rig.sink.door_event("granted")


async def test_command_jumps_a_bus_busy_with_polls(tmp_path: Path) -> None:
    # Wire timing at 9600 baud makes every transaction take real time, and four
    # pollers keep the queue full: the door.open may wait for the one request
    # already on the wire, never for the queued polls.
    async with make_rig(tmp_path, start_driver=False, wire_timing=True) as rig:
        polls = 0

        async def poller() -> None:
            nonlocal polls
            while True:
                await rig.bus.read_discrete_inputs(1, 0, 2, priority=BusPriority.POLL)
                polls += 1

        loop = asyncio.get_running_loop()
        rig.tasks.extend(loop.create_task(poller(), name=f"poller {i}") for i in range(4))
        server = rig.sim.server
        async with asyncio.timeout(WAIT_S):
            await server.wait_until(lambda: server.received >= 10)
        for _ in range(3):
            before = server.received
            pulse_wait = asyncio.ensure_future(rig.sim.next_pulse())
            await rig.driver.execute(DoorOpen(hold_seconds=2))
            async with asyncio.timeout(WAIT_S):
                await pulse_wait
            seen = list(server.requests)[before - server.received :]
            # Requests the node received from the call to the pulse, the pulse included.
            until_pulse = next(i for i, r in enumerate(seen) if r.address == 0x0200) + 1
            assert until_pulse <= 2, [(r.function_code, r.address) for r in seen]
            start = polls
            async with asyncio.timeout(WAIT_S):
                await server.wait_until(lambda: polls >= start + 4)  # noqa: B023
        assert len(rig.sim.node.pulses) == 3


async def test_a_refused_pulse_is_a_device_error_not_an_offline_bus(tmp_path: Path) -> None:
    # The relay board answers door.open with exception 04 (device failure): the
    # node is there and refused, which the command path reports as device_error.
    async with make_rig(tmp_path) as rig:
        await rig.online()
        rig.sim.server.slaves[1].write_hook = lambda request: 0x04
        with pytest.raises(DeviceError, match="device_failure") as caught:
            await rig.driver.execute(DoorOpen(hold_seconds=2))
        assert not isinstance(caught.value, TransportError)
        assert "offline" not in rig.sink.states()
