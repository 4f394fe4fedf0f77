"""The IR body-temperature gate driver, ``ir-body-temp-v1`` (PROTOCOLS.md).

One gate is one Modbus slave on a shared ``ModbusBus`` (RTU or TCP). Every
``poll_interval_ms`` the driver reads the six-register measurement block in
one request (``drivers.codecs.temperature_gate_map``) and:

- treats a reading as new when the measurement counter changed (16-bit,
  wrapping). Readings it did not see between two polls are reported as a gap,
  ``"missed": n`` on the next reading, never invented. A counter that jumps
  backwards by more than half the range is taken as a restart of the gate
  (a new baseline), not as 60 000 missed readings;
- emits ``temperature.body`` ``{celsius, threshold, fever}``, an alarm when
  ``celsius >= fever_threshold_c`` (the gateway's threshold decides, not the
  gate's own flag; CONTRACT.md);
- never reports as a temperature (so never as a fever) a reading the gate
  flags out of range (status bit 3) or one outside the plausible range
  ``plausible_min_c``..``plausible_max_c`` (default 30.0..45.0 degC: a hot
  drink, a sunlit forehead, a reflection): it is counted and the gate goes to
  ``device.status`` ``error`` with the reason, until its next plausible reading;
- reports the gate ``online`` when it answers, ``error`` while it flags a
  sensor error (or answers with a Modbus exception), and ``offline`` after
  ``offline_after_failures`` polls in a row without an answer and
  ``offline_after_s`` of silence (``drivers.liveness``). The bus rations
  polls to a slave that stopped answering; those fail fast and count as
  failures too, so the state holds until the gate answers a probe.

At start the block present on the gate is of unknown age: it is reported only
if the gate still flags it as unread (status bit ``new``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from drivers.actions import DeviceAction
from drivers.base import (
    ActionNotSupportedError,
    Clock,
    DeviceHealth,
    DeviceState,
    Driver,
    Priority,
    ReadingSink,
    ReadingType,
    make_reading,
)
from drivers.codecs.temperature_gate_map import (
    BLOCK_LENGTH,
    COUNTER_MODULUS,
    GateBlock,
    ReadFunction,
    TemperatureGateMapError,
    counter_delta,
)
from drivers.config.temperature_gate import TemperatureGateConfig
from drivers.transports.bus_pool import BusPool
from drivers.transports.errors import TransportError
from drivers.transports.modbus import BusPriority, ModbusBus, ModbusExceptionError

COUNTER_RESTART_DELTA = COUNTER_MODULUS // 2
"""A counter step at least this big is a restart of the gate, not a gap."""


class TemperatureGateDriver:
    """One temperature gate on a shared Modbus bus (module docstring)."""

    def __init__(
        self,
        config: TemperatureGateConfig,
        *,
        sink: ReadingSink,
        clock: Clock,
        bus: ModbusBus,
    ) -> None:
        self.config = config
        self.device_id = config.id
        self.health = DeviceHealth(config.id, sink, clock)
        self._sink = sink
        self._clock = clock
        self._bus = bus
        self._map = config.registers.register_map()
        self._liveness = config.liveness()
        self._implausible: str | None = None
        """Why the last new reading was not a temperature (an error state until a good one)."""
        self._last_counter: int | None = None
        self._unseen = 0
        """Readings the gate made that no poll saw, not yet reported."""

    def actions(self) -> frozenset[str]:
        """A gate takes no commands."""
        return frozenset()

    async def execute(self, action: DeviceAction) -> None:
        """Raises ActionNotSupportedError: a gate takes no commands."""
        raise ActionNotSupportedError(self.device_id, f"action {action.name} not supported")

    async def run(self) -> None:
        """Poll until cancelled; bus failures are states, not exceptions."""
        interval_s = self.config.poll_interval_ms / 1000
        next_at = time.monotonic()
        while True:
            await self.poll_once()
            next_at += interval_s
            now = time.monotonic()
            # Overran (slow bus, outage): keep the rate, never burst to catch up.
            next_at = max(next_at, now)
            await asyncio.sleep(next_at - now)

    async def poll_once(self) -> None:
        """Read the block once and act on it; never raises for the bus or the gate."""
        config = self.config
        self.health.count("polls")
        try:
            if self._map.function is ReadFunction.READ_INPUT_REGISTERS:
                words = await self._bus.read_input_registers(
                    config.slave, self._map.base_address, BLOCK_LENGTH, priority=BusPriority.POLL
                )
            else:
                words = await self._bus.read_holding_registers(
                    config.slave, self._map.base_address, BLOCK_LENGTH, priority=BusPriority.POLL
                )
            block = self._map.decode(words)
        except (ModbusExceptionError, TemperatureGateMapError) as exc:
            # It answered, but not with a measurement: wrong map, or a device fault.
            self._answered()
            self.health.count("device_errors")
            reason = exc.reason if isinstance(exc, ModbusExceptionError) else str(exc)
            self.health.set_state(DeviceState.ERROR, reason)
            return
        except TransportError as exc:
            self._no_answer(exc.reason)
            return
        self._answered()
        self._handle(block)

    def _answered(self) -> None:
        self._liveness.answered(self._clock.monotonic())
        self.health.seen()

    def _no_answer(self, reason: str) -> None:
        self.health.count("poll_failures")
        if self._liveness.failed(self._clock.monotonic()):
            self.health.set_state(DeviceState.OFFLINE, reason)

    def _handle(self, block: GateBlock) -> None:
        previous, self._last_counter = self._last_counter, block.counter
        if block.sensor_error:
            self.health.set_state(DeviceState.ERROR, "sensor error")
        elif self._implausible is not None:
            # Still the implausible reading's error, until a good reading clears it.
            self.health.set_state(DeviceState.ERROR, self._implausible)
        else:
            self.health.set_state(DeviceState.ONLINE)
        if previous is None:
            if block.new:
                self._reading(block, unseen=0)
            return
        delta = counter_delta(previous, block.counter)
        if delta == 0:
            return
        if delta >= COUNTER_RESTART_DELTA:
            self.health.count("counter_restarts")
            self._unseen = 0
            if block.new:
                self._reading(block, unseen=0)
            return
        self._reading(block, unseen=delta - 1)

    def _reading(self, block: GateBlock, *, unseen: int) -> None:
        """Report one new block, carrying the gap of readings no poll saw."""
        self._unseen += unseen
        self.health.count("missed_readings", unseen)
        if block.sensor_error or not block.valid:
            # Seen, but not a temperature: nothing to report; a gap before it
            # stays pending for the next valid reading.
            self.health.count("invalid_readings")
            return
        implausible = self._implausibility(block)
        if implausible is not None:
            # Never a fever: a reading the gate itself doubts, or no body's.
            self.health.count("implausible_readings")
            self._implausible = implausible
            self.health.set_state(DeviceState.ERROR, implausible)
            return
        if self._implausible is not None:
            self._implausible = None
            self.health.set_state(DeviceState.ONLINE)
        threshold = self.config.fever_threshold_c
        fever = block.celsius >= threshold
        data: dict[str, Any] = {"celsius": block.celsius, "threshold": threshold, "fever": fever}
        if self._unseen:
            data["missed"] = self._unseen
            self._unseen = 0
        self.health.count("readings")
        self._sink.put(
            make_reading(
                self._clock,
                self.device_id,
                ReadingType.TEMPERATURE_BODY,
                data,
                Priority.ALARM if fever else Priority.ROUTINE,
            )
        )

    def _implausibility(self, block: GateBlock) -> str | None:
        """Why ``block`` is not a body temperature, or None when it is one."""
        low, high = self.config.plausible_min_c, self.config.plausible_max_c
        if block.out_of_range:
            return f"gate flags reading out of range ({block.celsius:.1f} C)"
        if not low <= block.celsius <= high:
            return f"implausible reading {block.celsius:.1f} C (plausible {low:.1f}..{high:.1f})"
        return None


def build_driver(
    config: TemperatureGateConfig, *, sink: ReadingSink, clock: Clock, buses: BusPool
) -> Driver:
    """The temperature gate driver on the shared bus of its transport.

    Raises:
        ValueError: the transport has no port/host yet, or conflicts with
            another device's settings on the same line.
    """
    return TemperatureGateDriver(config, sink=sink, clock=clock, bus=buses.get(config.transport))
