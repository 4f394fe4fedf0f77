"""The temperature gate driver against its simulator over a real pty (and TCP).

The driver runs as it does in the daemon (its own poll loop on a shared bus);
tests script the simulated gate and wait for the readings that must follow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Priority, ReadingType, SystemClock
from drivers.registry import attach
from drivers.sim.modbus_server import ModbusSimServer
from drivers.sim.temperature_gate import (
    TemperatureGateDevice,
    TemperatureGateSimulator,
    make_simulator,
)
from drivers.temperature_gate import TemperatureGateConfig, build_driver
from drivers.transports.bus_pool import BusPool
from tests.devices import stop_tasks
from tests.fakes import WAIT_S, RecordingSink, typed

pytestmark = pytest.mark.integration

BUS_OPTIONS = {
    "reconnect_initial_s": 0.05,
    "reconnect_max_s": 0.2,
    "slave_probe_initial_s": 0.1,
    "slave_probe_max_s": 0.3,
}

TEMPERATURE = typed(ReadingType.TEMPERATURE_BODY)


def gate_config(gate_id: str, transport: dict[str, Any], **extra: Any) -> TemperatureGateConfig:
    raw: dict[str, Any] = {
        "id": gate_id,
        "kind": "temperature_gate",
        "transport": {"timeout_ms": 100, "retries": 0, **transport},
        "poll_interval_ms": 40,
        "offline_after_failures": 3,
        "offline_after_s": 0.3,
    }
    raw.update(extra)
    return TemperatureGateConfig.model_validate(raw)


@dataclass
class Running:
    sink: RecordingSink
    pool: BusPool


@contextlib.asynccontextmanager
async def running(configs: list[TemperatureGateConfig]) -> AsyncIterator[Running]:
    """Run a bus per line and a driver per gate, as the supervisor would."""
    sink = RecordingSink()
    pool = BusPool(**BUS_OPTIONS)
    drivers = [build_driver(c, sink=sink, clock=SystemClock(), buses=pool) for c in configs]
    tasks = [asyncio.create_task(bus.run(), name=f"bus {bus.name}") for bus in pool.buses]
    tasks += [asyncio.create_task(d.run(), name=f"driver {d.device_id}") for d in drivers]
    try:
        yield Running(sink, pool)
    finally:
        await stop_tasks(*tasks)


@contextlib.asynccontextmanager
async def simulated(
    config: TemperatureGateConfig, workdir: Path, *, ambient: bool = False
) -> AsyncIterator[tuple[TemperatureGateSimulator, Running]]:
    """One gate's simulator and its driver attached to it, for one test (time-boxed)."""
    sim = make_simulator(config, workdir, ambient=ambient)
    endpoint = await sim.start()
    try:
        attached = attach(config, endpoint)
        assert isinstance(attached, TemperatureGateConfig)
        async with running([attached]) as run, asyncio.timeout(WAIT_S):
            yield sim, run
    finally:
        await sim.stop()


async def test_readings_over_a_pty_field_by_field(tmp_path: Path) -> None:
    config = gate_config("temp-gate-1", {"type": "modbus_rtu"})
    async with simulated(config, tmp_path) as (sim, run):
        online = await run.sink.status("online", device="temp-gate-1")
        assert online.priority is Priority.ROUTINE

        sim.inject_reading(36.6)
        normal = await run.sink.next(TEMPERATURE)
        assert normal.device == "temp-gate-1"
        assert normal.type is ReadingType.TEMPERATURE_BODY
        assert normal.priority is Priority.ROUTINE
        assert dict(normal.data) == {"celsius": 36.6, "threshold": 37.3, "fever": False}
        assert normal.wall_ts > 0
        assert normal.mono_ts > 0

        sim.inject_reading(38.1)
        fever = await run.sink.next(TEMPERATURE)
        assert fever.priority is Priority.ALARM
        assert dict(fever.data) == {"celsius": 38.1, "threshold": 37.3, "fever": True}

        sim.inject_reading(37.3, fever=False)  # at the threshold; gate's own flag ignored
        edge = await run.sink.next(TEMPERATURE)
        assert edge.data["fever"] is True

        sim.inject_reading(36.9, skip=4)  # four readings no poll could see
        gap = await run.sink.next(TEMPERATURE)
        assert dict(gap.data) == {
            "celsius": 36.9,
            "threshold": 37.3,
            "fever": False,
            "missed": 4,
        }
        temperatures = [r for r in run.sink.readings if r.type is ReadingType.TEMPERATURE_BODY]
        assert len(temperatures) == 4  # nothing invented, nothing repeated


async def test_sensor_error_then_recovery(tmp_path: Path) -> None:
    config = gate_config("temp-gate-1", {"type": "modbus_rtu"})
    async with simulated(config, tmp_path) as (sim, run):
        await run.sink.status("online", device="temp-gate-1")
        mark = len(run.sink.readings)
        sim.sensor_error(True)
        error = await run.sink.status("error", device="temp-gate-1", after=mark)
        assert error.data["detail"] == "sensor error"
        sim.sensor_error(False)
        await run.sink.status("online", device="temp-gate-1", after=mark)
        sim.inject_reading(36.5)
        assert (await run.sink.next(TEMPERATURE)).data["celsius"] == 36.5


async def test_implausible_and_out_of_range_readings_are_errors_never_fevers(
    tmp_path: Path,
) -> None:
    config = gate_config("temp-gate-1", {"type": "modbus_rtu"})
    async with simulated(config, tmp_path) as (sim, run):
        await run.sink.status("online", device="temp-gate-1")
        mark = len(run.sink.readings)
        sim.inject_reading(52.4)  # a hot cup held to the sensor: the gate calls it valid
        error = await run.sink.status("error", device="temp-gate-1", after=mark)
        assert error.data["detail"] == "implausible reading 52.4 C (plausible 30.0..45.0)"
        sim.inject_reading(36.7)
        await run.sink.status("online", device="temp-gate-1", after=mark)
        await run.sink.wait_for(typed(ReadingType.TEMPERATURE_BODY, celsius=36.7))
        mark = len(run.sink.readings)
        sim.inject_reading(39.0, out_of_range=True)  # in range, but the gate doubts it
        error = await run.sink.status("error", device="temp-gate-1", after=mark)
        assert error.data["detail"] == "gate flags reading out of range (39.0 C)"
        sim.inject_reading(36.4)
        await run.sink.status("online", device="temp-gate-1", after=mark)
        await run.sink.wait_for(typed(ReadingType.TEMPERATURE_BODY, celsius=36.4))
        temperatures = run.sink.of_type(ReadingType.TEMPERATURE_BODY)
        assert [r.data["celsius"] for r in temperatures] == [36.7, 36.4]
        assert not any(r.priority is Priority.ALARM for r in temperatures)


async def test_silent_gate_goes_offline_while_its_neighbour_is_still_polled(
    tmp_path: Path,
) -> None:
    server = ModbusSimServer(name="shared line")
    gate1 = TemperatureGateDevice(server, slave=1)
    gate2 = TemperatureGateDevice(server, slave=2)
    path = await server.start_rtu(tmp_path / "line.tty")
    configs = [
        gate_config(f"temp-gate-{n}", {"type": "modbus_rtu", "port": path}, slave=n) for n in (1, 2)
    ]
    try:
        async with running(configs) as run, asyncio.timeout(WAIT_S):
            assert len(run.pool.buses) == 1
            await run.sink.status("online", device="temp-gate-1")
            await run.sink.status("online", device="temp-gate-2")

            gate1.stop_answering()
            mark = len(run.sink.readings)
            offline = await run.sink.status("offline", device="temp-gate-1", after=mark)
            assert offline.priority is Priority.ALARM
            # At least the configured number of polls went unanswered first.
            assert sum(1 for s in server.requests if s.slave == 1 and not s.answered) >= 3

            # The neighbour on the same bus keeps being polled and reported.
            reads = gate2.reads
            await server.wait_until(lambda: gate2.reads >= reads + 5)
            gate2.inject_reading(36.8)
            reading = await run.sink.wait_for(
                lambda r: r.device == "temp-gate-2" and r.type is ReadingType.TEMPERATURE_BODY
            )
            assert reading.data["celsius"] == 36.8

            gate1.inject_reading(36.4)  # measured while it was not answering
            gate1.resume_answering()
            await run.sink.status("online", device="temp-gate-1", after=mark)
            back = await run.sink.wait_for(
                lambda r: r.device == "temp-gate-1" and r.type is ReadingType.TEMPERATURE_BODY
            )
            assert back.data["celsius"] == 36.4
            assert "missed" not in back.data
    finally:
        await server.stop()


async def test_unplug_goes_offline_and_replug_comes_back(tmp_path: Path) -> None:
    config = gate_config("temp-gate-1", {"type": "modbus_rtu"})
    async with simulated(config, tmp_path) as (sim, run):
        await run.sink.status("online", device="temp-gate-1")
        mark = len(run.sink.readings)
        sim.unplug()
        await run.sink.status("offline", device="temp-gate-1", after=mark)
        assert not run.pool.buses[0].connected
        sim.replug()
        await run.sink.status("online", device="temp-gate-1", after=mark)
        sim.inject_reading(36.7)
        assert (await run.sink.next(TEMPERATURE)).data["celsius"] == 36.7


async def test_over_modbus_tcp_with_input_registers(tmp_path: Path) -> None:
    config = gate_config(
        "temp-gate-9",
        {"type": "modbus_tcp"},
        slave=9,
        registers={"base_address": 0x20, "function_code": 4, "scale": 0.01},
    )
    async with simulated(config, tmp_path) as (sim, run):
        (bus,) = run.pool.buses
        assert bus.name.startswith("tcp:127.0.0.1:")  # loopback TCP, as a converter would be
        await run.sink.status("online", device="temp-gate-9")
        sim.inject_reading(37.46)
        reading = await run.sink.next(TEMPERATURE)
        assert dict(reading.data) == {"celsius": 37.46, "threshold": 37.3, "fever": True}


async def test_ambient_mode_produces_normal_readings(tmp_path: Path) -> None:
    config = gate_config("temp-gate-1", {"type": "modbus_rtu"})
    async with simulated(config, tmp_path, ambient=True) as (_, run):
        for _ in range(2):
            reading = await run.sink.next(TEMPERATURE)
            assert 36.0 <= reading.data["celsius"] <= 37.0
            assert reading.data["fever"] is False
