"""The temperature gate driver's decisions, against a scripted in-memory bus.

No pty and no sleeps: ``poll_once`` is driven by hand and the bus answers
from a script. The same behaviour over a real pty is in
tests/integration/test_temperature_gate.py.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import pytest

from drivers.actions import DoorOpen
from drivers.base import DeviceError, Priority, ReadingType
from drivers.temperature_gate import TemperatureGateConfig, TemperatureGateDriver, build_driver
from drivers.transports.bus_pool import BusPool
from drivers.transports.errors import TransportError, TransportTimeoutError
from drivers.transports.modbus import BusPriority, ModbusBus, ModbusExceptionError
from tests.fakes import RecordingSink

VALID_NEW = 0x11
SENSOR_ERROR = 0x04


POLL_S = 0.25
"""Time that passes per bus read (the default poll interval)."""


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0

    def wall(self) -> float:
        return 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono


class ScriptedBus:
    """Answers each read with the next scripted word list or exception."""

    def __init__(self, clock: FakeClock) -> None:
        self.script: deque[list[int] | Exception] = deque()
        self.calls: list[tuple[str, int, int, int, BusPriority]] = []
        self.clock = clock

    def block(self, tenths: int, status: int, counter: int) -> None:
        self.script.append([tenths, status, 240, max(tenths - 8, 0), 40, counter])

    async def _read(
        self, kind: str, slave: int, address: int, count: int, priority: BusPriority
    ) -> list[int]:
        self.calls.append((kind, slave, address, count, priority))
        self.clock.mono += POLL_S
        step = self.script.popleft()
        if isinstance(step, Exception):
            raise step
        return step

    async def read_holding_registers(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[int]:
        return await self._read("holding", slave, address, count, priority)

    async def read_input_registers(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[int]:
        return await self._read("input", slave, address, count, priority)


def make(**overrides: Any) -> tuple[TemperatureGateDriver, ScriptedBus, RecordingSink]:
    raw: dict[str, Any] = {
        "id": "temp-gate-1",
        "kind": "temperature_gate",
        "transport": {"type": "modbus_rtu", "port": "/dev/ttyUSB0"},
    }
    raw.update(overrides)
    config = TemperatureGateConfig.model_validate(raw)
    clock = FakeClock()
    bus = ScriptedBus(clock)
    sink = RecordingSink()
    driver = TemperatureGateDriver(config, sink=sink, clock=clock, bus=cast(ModbusBus, bus))
    return driver, bus, sink


def temperatures(sink: RecordingSink) -> list[dict[str, Any]]:
    return [dict(reading.data) for reading in sink.of_type(ReadingType.TEMPERATURE_BODY)]


async def poll(driver: TemperatureGateDriver, times: int = 1) -> None:
    for _ in range(times):
        await driver.poll_once()


async def test_reads_the_six_register_block_in_one_poll_request() -> None:
    driver, bus, _ = make(slave=7)
    bus.block(365, 0x01, 3)
    await poll(driver)
    assert bus.calls == [("holding", 7, 0, 6, BusPriority.POLL)]


async def test_register_overrides_choose_address_and_function() -> None:
    driver, bus, sink = make(registers={"base_address": 0x100, "function_code": 4, "scale": 0.01})
    bus.script.append([0, 0x01, 0, 0, 0, 1])
    bus.script.append([3731, VALID_NEW, 2400, 3650, 40, 2])
    await poll(driver, 2)
    assert bus.calls[0][:4] == ("input", 1, 0x100, 6)
    assert temperatures(sink) == [{"celsius": 37.31, "threshold": 37.3, "fever": True}]


async def test_first_block_is_reported_only_when_flagged_new() -> None:
    driver, bus, sink = make()
    bus.block(365, 0x01, 10)  # an old reading, already read by someone
    await poll(driver)
    assert temperatures(sink) == []
    driver2, bus2, sink2 = make()
    bus2.block(366, VALID_NEW, 10)
    await poll(driver2)
    assert temperatures(sink2) == [{"celsius": 36.6, "threshold": 37.3, "fever": False}]


async def test_online_then_a_reading_per_counter_change() -> None:
    driver, bus, sink = make()
    bus.block(365, 0x01, 10)
    bus.block(365, 0x01, 10)  # unchanged: nothing new
    bus.block(367, VALID_NEW, 11)
    await poll(driver, 3)
    assert sink.states() == ["online"]
    [reading] = sink.of_type(ReadingType.TEMPERATURE_BODY)
    assert reading.data == {"celsius": 36.7, "threshold": 37.3, "fever": False}
    assert reading.priority is Priority.ROUTINE
    assert reading.device == "temp-gate-1"


@pytest.mark.parametrize(("tenths", "fever"), [(372, False), (373, True), (385, True)])
async def test_fever_at_or_above_the_gateway_threshold_is_an_alarm(
    tenths: int, fever: bool
) -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 1)
    # The gate's own fever bit is deliberately wrong: the gateway decides.
    bus.block(tenths, VALID_NEW | (0 if fever else 0x02), 2)
    await poll(driver, 2)
    [reading] = sink.of_type(ReadingType.TEMPERATURE_BODY)
    assert reading.data["fever"] is fever
    assert reading.priority is (Priority.ALARM if fever else Priority.ROUTINE)


async def test_configured_threshold() -> None:
    driver, bus, sink = make(fever_threshold_c=38.0)
    bus.block(360, 0x01, 1)
    bus.block(379, VALID_NEW, 2)
    await poll(driver, 2)
    assert temperatures(sink) == [{"celsius": 37.9, "threshold": 38.0, "fever": False}]


async def test_missed_counts_are_a_gap_not_invented_readings() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 100)
    bus.block(366, VALID_NEW, 104)  # 101..103 never seen
    bus.block(367, VALID_NEW, 105)
    await poll(driver, 3)
    assert temperatures(sink) == [
        {"celsius": 36.6, "threshold": 37.3, "fever": False, "missed": 3},
        {"celsius": 36.7, "threshold": 37.3, "fever": False},
    ]
    assert driver.health.counters["missed_readings"] == 3


async def test_counter_wrap_is_one_step() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 0xFFFF)
    bus.block(366, VALID_NEW, 0)
    bus.block(367, VALID_NEW, 2)
    await poll(driver, 3)
    assert [reading.get("missed") for reading in temperatures(sink)] == [None, 1]


async def test_counter_going_back_is_a_restart_not_a_huge_gap() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 5000)
    bus.block(366, VALID_NEW, 1)
    await poll(driver, 2)
    assert temperatures(sink) == [{"celsius": 36.6, "threshold": 37.3, "fever": False}]
    assert driver.health.counters["counter_restarts"] == 1


async def test_gap_before_an_invalid_reading_carries_to_the_next_valid_one() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 1)
    bus.script.append([0, 0x18, 240, 240, 300, 4])  # out of range, two unseen before it
    bus.block(366, VALID_NEW, 5)
    await poll(driver, 3)
    assert temperatures(sink) == [{"celsius": 36.6, "threshold": 37.3, "fever": False, "missed": 2}]
    assert driver.health.counters["invalid_readings"] == 1


async def test_sensor_error_is_an_error_state_until_it_clears() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 1)
    bus.block(0, SENSOR_ERROR, 1)
    bus.block(0, SENSOR_ERROR, 2)
    bus.block(365, VALID_NEW, 3)
    await poll(driver, 4)
    assert sink.states() == ["online", "error", "online"]
    assert sink.of_type(ReadingType.DEVICE_STATUS)[1].data["detail"] == "sensor error"
    assert temperatures(sink) == [{"celsius": 36.5, "threshold": 37.3, "fever": False}]


async def test_offline_after_the_configured_failures_and_back() -> None:
    driver, bus, sink = make(offline_after_failures=3, offline_after_s=0.5)
    bus.block(360, 0x01, 1)
    bus.script.extend(TransportTimeoutError("bus", "no reply") for _ in range(2))
    await poll(driver, 3)
    assert sink.states() == ["online"]
    bus.script.append(TransportError("bus", "slave 1 backing off"))
    await poll(driver)
    assert sink.states() == ["online", "offline"]
    offline = sink.of_type(ReadingType.DEVICE_STATUS)[-1]
    assert offline.priority is Priority.ALARM
    bus.script.extend(TransportTimeoutError("bus", "no reply") for _ in range(5))
    await poll(driver, 5)
    assert sink.states() == ["online", "offline"]  # logged once, reported once
    bus.block(366, VALID_NEW, 9)
    await poll(driver)
    assert sink.states() == ["online", "offline", "online"]
    # Readings made while it was unreachable are a gap on the first one back.
    assert temperatures(sink) == [{"celsius": 36.6, "threshold": 37.3, "fever": False, "missed": 7}]


async def test_a_failure_streak_is_reset_by_an_answer() -> None:
    driver, bus, sink = make(offline_after_failures=2, offline_after_s=0.1)
    bus.block(360, 0x01, 1)
    bus.script.append(TransportTimeoutError("bus", "no reply"))
    bus.block(360, 0x01, 1)
    bus.script.append(TransportTimeoutError("bus", "no reply"))
    await poll(driver, 4)
    assert sink.states() == ["online"]


async def test_failures_within_offline_after_s_are_not_an_outage() -> None:
    # Six failed polls in 1.5 s (a noise burst): not offline under the 3 s default.
    driver, bus, sink = make()
    bus.block(360, 0x01, 1)
    bus.script.extend(TransportTimeoutError("bus", "no reply") for _ in range(6))
    bus.block(361, VALID_NEW, 2)
    await poll(driver, 8)
    assert sink.states() == ["online"]
    assert temperatures(sink) == [{"celsius": 36.1, "threshold": 37.3, "fever": False}]
    # Silent past offline_after_s: offline.
    bus.script.extend(TransportTimeoutError("bus", "no reply") for _ in range(13))
    await poll(driver, 13)
    assert sink.states() == ["online", "offline"]


async def test_implausible_reading_is_an_error_never_a_fever() -> None:
    driver, bus, sink = make()
    bus.block(360, 0x01, 1)
    bus.block(512, VALID_NEW | 0x02, 2)  # 51.2 C, the gate's own fever flag set
    bus.block(512, VALID_NEW | 0x02, 2)  # the same block polled again
    bus.block(250, VALID_NEW, 3)  # 25.0 C: too cold for a body
    bus.block(366, VALID_NEW, 4)
    await poll(driver, 5)
    assert sink.states() == ["online", "error", "online"]
    error = sink.of_type(ReadingType.DEVICE_STATUS)[1]
    assert error.data["detail"] == "implausible reading 51.2 C (plausible 30.0..45.0)"
    assert error.priority is Priority.ROUTINE
    assert temperatures(sink) == [{"celsius": 36.6, "threshold": 37.3, "fever": False}]
    assert driver.health.counters["implausible_readings"] == 2


async def test_out_of_range_bit_is_an_error_even_in_range() -> None:
    driver, bus, sink = make(plausible_min_c=32.0, plausible_max_c=43.0)
    bus.block(360, 0x01, 1)
    bus.block(391, VALID_NEW | 0x02 | 0x08, 2)  # 39.1 C, fever flag, but out of range
    await poll(driver, 2)
    assert sink.states() == ["online", "error"]
    assert sink.of_type(ReadingType.DEVICE_STATUS)[1].data["detail"] == (
        "gate flags reading out of range (39.1 C)"
    )
    assert temperatures(sink) == []


@pytest.mark.parametrize(
    "options",
    [
        {"plausible_min_c": 38.0},  # above the fever threshold
        {"plausible_max_c": 37.0},  # at or below the fever threshold
    ],
)
def test_plausible_range_must_hold_the_threshold(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="plausible_min_c <= fever_threshold_c"):
        make(**options)


async def test_modbus_exception_is_an_error_state() -> None:
    driver, bus, sink = make()
    bus.script.append(ModbusExceptionError("bus", 1, 3, 2))
    await poll(driver)
    [status] = sink.of_type(ReadingType.DEVICE_STATUS)
    assert status.data["state"] == "error"
    assert "illegal_data_address" in status.data["detail"]


async def test_no_actions() -> None:
    driver, _, _ = make()
    assert driver.actions() == frozenset()
    with pytest.raises(DeviceError):
        await driver.execute(DoorOpen())


def test_build_driver_shares_the_bus_of_its_port() -> None:
    pool = BusPool()
    sink = RecordingSink()
    configs = [
        TemperatureGateConfig.model_validate(
            {
                "id": f"temp-gate-{slave}",
                "kind": "temperature_gate",
                "slave": slave,
                "transport": {"type": "modbus_rtu", "port": "/dev/ttyUSB0"},
            }
        )
        for slave in (1, 2)
    ]
    drivers = [build_driver(config, sink=sink, clock=FakeClock(), buses=pool) for config in configs]
    assert [driver.device_id for driver in drivers] == ["temp-gate-1", "temp-gate-2"]
    assert len(pool.buses) == 1
