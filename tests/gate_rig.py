"""A gate on real ptys: a door node and a UHF reader with their simulators.

Used by the line-noise tests and ``benchmarks.bench_line_noise``: the shipped
config's timings (Modbus 300 ms timeout and one retry, 200 ms polls; UHF 1.5 s
reply timeout), one ``BusPool``, one sink that tests wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from drivers.access_file import FileAccessList
from drivers.access_rules import DoorAccess, WallTime
from drivers.base import DeviceState, Reading, ReadingType, SystemClock
from drivers.door_node import DoorNodeConfig, DoorNodeDriver
from drivers.door_node import build_driver as build_door
from drivers.registry import attach
from drivers.sim.door_node import DoorNodeSimulator
from drivers.sim.uhf_reader import UhfReaderSimulator
from drivers.transports.bus_pool import BusPool
from drivers.transports.modbus import ModbusBus
from drivers.uhf_reader import UhfReaderConfig, UhfReaderDriver
from drivers.uhf_reader import build_driver as build_uhf
from tests.devices import stop_tasks
from tests.fakes import RecordingSink, status_is, typed

KNOWN = "04A1B2C3"
EPC = "E2000017221100881520ABCD"


def door_event(kind: str) -> Callable[[Reading], bool]:
    return typed(ReadingType.DOOR_EVENT, event=kind)


def bike(epc: str) -> Callable[[Reading], bool]:
    return typed(ReadingType.EBIKE_PASS, epc=epc)


@dataclass
class Gate:
    door_sim: DoorNodeSimulator
    door: DoorNodeDriver
    bus: ModbusBus
    uhf_sim: UhfReaderSimulator
    uhf: UhfReaderDriver
    sink: RecordingSink

    async def ready(self) -> None:
        await self.sink.wait_for(status_is(DeviceState.ONLINE, device=self.door.device_id))
        await self.sink.wait_for(status_is(DeviceState.ONLINE, device=self.uhf.device_id))

    def never_offline(self) -> None:
        assert "offline" not in self.sink.states(self.door.device_id), self.sink.states(
            self.door.device_id
        )
        assert "offline" not in self.sink.states(self.uhf.device_id), self.sink.states(
            self.uhf.device_id
        )


@contextlib.asynccontextmanager
async def gate(
    tmp_path: Path, *, door: dict[str, Any] | None = None, uhf: dict[str, Any] | None = None
) -> AsyncIterator[Gate]:
    """A door node and a UHF reader with the shipped config's timings, on real ptys."""
    cards = tmp_path / "cards.txt"
    cards.write_text(f"{KNOWN}  # resident\n", encoding="utf-8")
    door_config = DoorNodeConfig.model_validate(
        {
            "id": "door-east-1",
            "kind": "door_node",
            "simulate": True,
            "transport": {"type": "modbus_rtu", "timeout_ms": 300, "retries": 1},
            "poll_interval_ms": 200,
            **(door or {}),
        }
    )
    uhf_config = UhfReaderConfig.model_validate(
        {
            "id": "ebike-reader-1",
            "kind": "uhf_reader",
            "simulate": True,
            "poll_interval_ms": 200,
            "collapse_window_s": 0.5,
            **(uhf or {}),
        }
    )
    door_sim = DoorNodeSimulator(door_config, tmp_path, ambient=False)
    uhf_sim = UhfReaderSimulator(uhf_config, tmp_path, ambient=False, seed=9)
    door_config = attach(door_config, await door_sim.start())
    uhf_config = attach(uhf_config, await uhf_sim.start())
    assert isinstance(door_config, DoorNodeConfig) and isinstance(uhf_config, UhfReaderConfig)
    sink = RecordingSink()
    pool = BusPool()
    door_driver = build_door(
        door_config,
        sink=sink,
        clock=SystemClock(),
        buses=pool,
        access=DoorAccess(FileAccessList(cards), WallTime(SystemClock()), UTC),
    )
    uhf_driver = build_uhf(uhf_config, sink=sink, clock=SystemClock())
    assert isinstance(door_driver, DoorNodeDriver) and isinstance(uhf_driver, UhfReaderDriver)
    (bus,) = pool.buses
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(bus.run(), name="noise bus"),
        loop.create_task(door_driver.run(), name="noise door"),
        loop.create_task(uhf_driver.run(), name="noise uhf"),
    ]
    try:
        yield Gate(door_sim, door_driver, bus, uhf_sim, uhf_driver, sink)
    finally:
        await stop_tasks(*reversed(tasks))
        await door_sim.stop()
        await uhf_sim.stop()
