"""The ``ir-body-temp-v1`` register map as typed data (PROTOCOLS.md, "IR body-temperature gate").

No public standard exists for body-temperature gates; the profile follows
documented Modbus IR sensors. Six registers from the base address (default
0x0000), read in one FC03 (or FC04) request:

    +0  body temperature, compensated, int16 x scale degC (0 = no valid reading)
    +1  status bits: b0 valid, b1 fever, b2 sensor error, b3 out of range,
        b4 new reading since last read
    +2  ambient temperature, int16 x scale degC
    +3  raw object temperature, int16 x scale degC
    +4  distance, uint16 cm
    +5  measurement counter, uint16, wraps, +1 per new reading

    0x0010  fever threshold (R/W), int16 x0.1 degC, default 373
    0x0011  calibration offset (R/W), int16 x0.1 degC
    coil 0  alarm buzzer (R/W)

Real gates differ: base address, scale (0.1 or 0.01) and function code are
configuration (``RegisterMap``). Pure and stdlib only: the driver reads the
registers through the bus, this module turns them into a ``GateBlock`` and
back (the simulator encodes with the same map).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from drivers.codecs.errors import ProtocolError

PROFILE = "ir-body-temp-v1"

BLOCK_LENGTH = 6
"""Registers read in one request: temperature .. counter."""
COUNTER_MODULUS = 0x10000
THRESHOLD_REGISTER = 0x0010
CALIBRATION_REGISTER = 0x0011
BUZZER_COIL = 0x0000
DEFAULT_THRESHOLD_RAW = 373
"""The device's own fever threshold, x0.1 degC (37.3)."""

_OFFSET_BODY = 0
_OFFSET_STATUS = 1
_OFFSET_AMBIENT = 2
_OFFSET_RAW_OBJECT = 3
_OFFSET_DISTANCE = 4
_OFFSET_COUNTER = 5
_MAX_WORD = 0xFFFF
_SCALE_DECIMALS = {0.1: 1, 0.01: 2}


class ReadFunction(IntEnum):
    """Function codes a gate may use for its measurement block."""

    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04


class GateStatus(IntFlag):
    """Status register bits."""

    VALID = 0x01
    FEVER = 0x02
    SENSOR_ERROR = 0x04
    OUT_OF_RANGE = 0x08
    NEW = 0x10


class TemperatureGateMapError(ProtocolError):
    """Registers that do not fit the ir-body-temp-v1 map."""


def _to_int16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def _check_word(value: int) -> None:
    if not 0 <= value <= _MAX_WORD:
        raise TemperatureGateMapError(f"register value {value} out of 0..65535")


@dataclass(frozen=True, slots=True)
class GateBlock:
    """The six measurement registers, decoded. Temperatures in degC."""

    celsius: float
    status: GateStatus
    ambient_c: float
    raw_object_c: float
    distance_cm: int
    counter: int

    @property
    def valid(self) -> bool:
        return GateStatus.VALID in self.status and self.celsius != 0

    @property
    def fever(self) -> bool:
        """The device's own fever flag (the gateway decides with its own threshold)."""
        return GateStatus.FEVER in self.status

    @property
    def sensor_error(self) -> bool:
        return GateStatus.SENSOR_ERROR in self.status

    @property
    def out_of_range(self) -> bool:
        return GateStatus.OUT_OF_RANGE in self.status

    @property
    def new(self) -> bool:
        return GateStatus.NEW in self.status


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where and how one gate model keeps its measurement block."""

    base_address: int = 0x0000
    scale: float = 0.1
    function: ReadFunction = ReadFunction.READ_HOLDING_REGISTERS

    def __post_init__(self) -> None:
        if self.scale not in _SCALE_DECIMALS:
            raise TemperatureGateMapError(f"scale {self.scale} is not 0.1 or 0.01")
        if not 0 <= self.base_address <= COUNTER_MODULUS - BLOCK_LENGTH:
            raise TemperatureGateMapError(f"base address {self.base_address} out of range")
        # Accept a plain int from configuration.
        object.__setattr__(self, "function", ReadFunction(self.function))

    def to_celsius(self, word: int) -> float:
        """A signed register value in degC, rounded to the scale's decimals."""
        return round(_to_int16(word) * self.scale, _SCALE_DECIMALS[self.scale])

    def to_word(self, celsius: float) -> int:
        """degC to the unsigned register value (two's complement when negative)."""
        raw = round(celsius / self.scale)
        if not -0x8000 <= raw <= 0x7FFF:
            raise TemperatureGateMapError(f"{celsius} degC does not fit int16 x {self.scale}")
        return raw & _MAX_WORD

    def decode(self, registers: Sequence[int]) -> GateBlock:
        """Decode the six registers from the base address.

        Raises:
            TemperatureGateMapError: not six registers, or a value outside 16 bits.
        """
        if len(registers) != BLOCK_LENGTH:
            raise TemperatureGateMapError(
                f"measurement block needs {BLOCK_LENGTH} registers, got {len(registers)}"
            )
        for value in registers:
            _check_word(value)
        return GateBlock(
            celsius=self.to_celsius(registers[_OFFSET_BODY]),
            status=GateStatus(registers[_OFFSET_STATUS] & 0x1F),
            ambient_c=self.to_celsius(registers[_OFFSET_AMBIENT]),
            raw_object_c=self.to_celsius(registers[_OFFSET_RAW_OBJECT]),
            distance_cm=registers[_OFFSET_DISTANCE],
            counter=registers[_OFFSET_COUNTER],
        )

    def encode(self, block: GateBlock) -> list[int]:
        """The six register values of ``block`` (the simulator's side).

        Raises:
            TemperatureGateMapError: a value that does not fit its register.
        """
        words = [
            self.to_word(block.celsius),
            int(block.status),
            self.to_word(block.ambient_c),
            self.to_word(block.raw_object_c),
            block.distance_cm,
            block.counter,
        ]
        for value in words:
            _check_word(value)
        return words


def counter_delta(previous: int, current: int) -> int:
    """New readings between two counter values, across the 16-bit wrap."""
    return (current - previous) % COUNTER_MODULUS
