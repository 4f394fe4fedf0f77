"""Simulated IR body-temperature gate (``ir-body-temp-v1``) on ``ModbusSimServer``.

``TemperatureGateDevice`` is one gate's registers on one slave id of a
simulated line; several can share a line (the bus-efficiency benchmark puts
eight on one pty). ``TemperatureGateSimulator`` is the ``Simulator`` a
``simulate: true`` device gets: its own line (a pty for RTU, a loopback port
for TCP) with one gate on it.

Scriptable from tests: ``inject_reading`` (a person measured, optionally with
the gate's own fever flag forced, optionally after ``skip`` readings no poll
will see), ``sensor_error``, ``stop_answering`` / ``resume_answering``,
``unplug`` / ``replug``. In ambient mode a passer-by with a normal temperature
is measured every 0.5 s or so, so the daemon's shipped configuration has
something to report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Unpack

from drivers.codecs.temperature_gate_map import (
    BLOCK_LENGTH,
    BUZZER_COIL,
    CALIBRATION_REGISTER,
    COUNTER_MODULUS,
    DEFAULT_THRESHOLD_RAW,
    THRESHOLD_REGISTER,
    GateBlock,
    GateStatus,
    ReadFunction,
    RegisterMap,
)
from drivers.sim.config import TemperatureGateSimConfig
from drivers.sim.modbus_line import LineOptions, ModbusLineSimulator
from drivers.sim.modbus_server import ModbusSimServer, ReadRequest, Table

AMBIENT_PERIOD_S = 0.5
"""A passer-by about every 0.5 s in ambient mode (jittered +-40 %)."""
AMBIENT_BODY_C = (36.1, 37.0)
"""Normal temperatures of passers-by, below the default 37.3 threshold."""
ROOM_C = 24.0
COMPENSATION_C = 0.8
"""Raw object temperature is the compensated body temperature minus this."""
DEFAULT_DISTANCE_CM = 40


class TemperatureGateDevice:
    """One gate's registers on a slave of a ``ModbusSimServer``."""

    def __init__(
        self,
        server: ModbusSimServer,
        *,
        slave: int = 1,
        register_map: RegisterMap | None = None,
    ) -> None:
        self.server = server
        self.slave = slave
        self.map = register_map or RegisterMap()
        self.reads = 0
        """Reads of the measurement block (the driver's polls that got an answer)."""
        self._table = (
            Table.INPUT_REGISTERS
            if self.map.function is ReadFunction.READ_INPUT_REGISTERS
            else Table.HOLDING_REGISTERS
        )
        self._block = GateBlock(
            celsius=0.0,
            status=GateStatus(0),
            ambient_c=ROOM_C,
            raw_object_c=ROOM_C,
            distance_cm=0,
            counter=0,
        )
        self._store = server.add_slave(slave)
        self._store.set(Table.HOLDING_REGISTERS, THRESHOLD_REGISTER, [DEFAULT_THRESHOLD_RAW, 0])
        self._store.set(Table.COILS, BUZZER_COIL, [0])
        self._store.read_hook = self._on_read
        self._publish()

    @property
    def counter(self) -> int:
        return self._block.counter

    @property
    def block(self) -> GateBlock:
        return self._block

    def inject_reading(
        self,
        celsius: float,
        *,
        fever: bool | None = None,
        skip: int = 0,
        valid: bool = True,
        out_of_range: bool = False,
        distance_cm: int = DEFAULT_DISTANCE_CM,
    ) -> int:
        """Measure a person; return the new counter value.

        ``fever`` forces the gate's own flag (default: the gate's threshold
        register decides); ``skip`` readings happen first that no poll will
        see; ``valid=False`` is an out-of-range measurement (temperature 0);
        ``out_of_range`` keeps the temperature but sets the gate's out-of-range
        bit (a measurement the gate itself doubts: too far, moving, reflective).
        """
        if skip < 0:
            raise ValueError("skip must be >= 0")
        status = GateStatus.NEW
        if valid:
            status |= GateStatus.VALID
            if fever is None:
                fever = celsius >= self.threshold_c
            if fever:
                status |= GateStatus.FEVER
        if out_of_range or not valid:
            status |= GateStatus.OUT_OF_RANGE
        if GateStatus.SENSOR_ERROR in self._block.status:
            status |= GateStatus.SENSOR_ERROR
        body = celsius if valid else 0.0
        self._block = GateBlock(
            celsius=body,
            status=status,
            ambient_c=ROOM_C,
            raw_object_c=round(body - COMPENSATION_C, 2) if valid else ROOM_C,
            distance_cm=distance_cm,
            counter=(self._block.counter + 1 + skip) % COUNTER_MODULUS,
        )
        self._publish()
        return self._block.counter

    def set_counter(self, counter: int) -> None:
        """Set the measurement counter (a wrap test, or a gate that restarted)."""
        self._block = dataclasses.replace(self._block, counter=counter % COUNTER_MODULUS)
        self._publish()

    def sensor_error(self, on: bool = True) -> None:
        """Raise or clear the sensor error bit (no valid reading while it is set)."""
        status = self._block.status
        if on:
            status = (status | GateStatus.SENSOR_ERROR) & ~GateStatus.VALID
        else:
            status &= ~GateStatus.SENSOR_ERROR
        self._block = dataclasses.replace(self._block, status=status)
        self._publish()

    def stop_answering(self) -> None:
        """The gate hears requests but no longer answers (the others on the line do)."""
        self.server.silence(self.slave, True)

    def resume_answering(self) -> None:
        self.server.silence(self.slave, False)

    @property
    def threshold_c(self) -> float:
        """The gate's own fever threshold (register 0x0010, x0.1 degC)."""
        raw = self._store.get(Table.HOLDING_REGISTERS, THRESHOLD_REGISTER)
        return (raw[0] if raw else DEFAULT_THRESHOLD_RAW) / 10

    @property
    def calibration_c(self) -> float:
        raw = self._store.get(Table.HOLDING_REGISTERS, CALIBRATION_REGISTER)
        word = raw[0] if raw else 0
        return (word - 0x10000 if word & 0x8000 else word) / 10

    def _publish(self) -> None:
        self._store.set(self._table, self.map.base_address, self.map.encode(self._block))

    def _on_read(self, request: ReadRequest) -> None:
        status_address = self.map.base_address + 1
        if request.table is not self._table or not (
            request.address <= status_address < request.address + request.count
        ):
            return
        if request.address == self.map.base_address and request.count == BLOCK_LENGTH:
            self.reads += 1
        # "b4 new reading since last read": the read that saw it clears it.
        if GateStatus.NEW in self._block.status:
            self._block = dataclasses.replace(
                self._block, status=self._block.status & ~GateStatus.NEW
            )
            self._publish()


class TemperatureGateSimulator(ModbusLineSimulator):
    """A simulated gate on its own line, for a ``simulate: true`` device."""

    def __init__(
        self, config: TemperatureGateSimConfig, workdir: Path, **options: Unpack[LineOptions]
    ) -> None:
        super().__init__(config, workdir, **options)
        self.config = config
        self.gate = TemperatureGateDevice(
            self.server, slave=config.slave, register_map=config.registers.register_map()
        )

    def inject_reading(
        self,
        celsius: float,
        *,
        fever: bool | None = None,
        skip: int = 0,
        out_of_range: bool = False,
    ) -> int:
        """See ``TemperatureGateDevice.inject_reading``."""
        return self.gate.inject_reading(celsius, fever=fever, skip=skip, out_of_range=out_of_range)

    def sensor_error(self, on: bool = True) -> None:
        self.gate.sensor_error(on)

    def stop_answering(self) -> None:
        self.gate.stop_answering()

    def resume_answering(self) -> None:
        self.gate.resume_answering()

    async def _ambient(self) -> None:
        """Passers-by with normal temperatures."""
        low, high = AMBIENT_BODY_C
        while True:
            await self.ambient.pause(AMBIENT_PERIOD_S)
            self.gate.inject_reading(round(self._rng.uniform(low, high), 1))


def make_simulator(
    config: TemperatureGateSimConfig, workdir: Path, *, ambient: bool = True
) -> TemperatureGateSimulator:
    """The simulator for a ``simulate: true`` temperature gate."""
    return TemperatureGateSimulator(config, workdir, ambient=ambient)
