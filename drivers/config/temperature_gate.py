"""The temperature gate's configuration (``kind: temperature_gate``): no driver, no bus."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.codecs.temperature_gate_map import (
    BLOCK_LENGTH,
    COUNTER_MODULUS,
    ReadFunction,
    RegisterMap,
)
from drivers.liveness import PolledDeviceConfig
from drivers.transports.config import ModbusTransportConfig


class TemperatureGateRegisters(BaseModel):
    """Where a gate model keeps its measurement block (PROTOCOLS.md defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_address: int = Field(
        default=0x0000,
        ge=0,
        le=COUNTER_MODULUS - BLOCK_LENGTH,
        description="First of the six measurement registers.",
    )
    scale: float = Field(default=0.1, description="degC per register unit: 0.1 or 0.01.")
    function_code: Literal[3, 4] = Field(
        default=3, description="3 (holding registers) or 4 (input registers)."
    )

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, value: float) -> float:
        if value not in (0.1, 0.01):
            raise ValueError("scale must be 0.1 or 0.01")
        return value

    def register_map(self) -> RegisterMap:
        return RegisterMap(
            base_address=self.base_address,
            scale=self.scale,
            function=ReadFunction(self.function_code),
        )


class TemperatureGateConfig(PolledDeviceConfig):
    """An IR body-temperature gate (``ir-body-temp-v1``) on Modbus RTU or TCP."""

    kind: Literal["temperature_gate"]
    transport: ModbusTransportConfig
    slave: int = Field(default=1, ge=1, le=247, description="Modbus slave id of the gate.")
    poll_interval_ms: int = Field(
        default=250, ge=20, le=60_000, description="Read of the measurement block, ms."
    )
    fever_threshold_c: float = Field(
        default=37.3,
        ge=30.0,
        le=45.0,
        description="Gateway-side fever threshold: a reading at or above it is an alarm.",
    )
    registers: TemperatureGateRegisters = Field(
        default_factory=TemperatureGateRegisters,
        description="Register map overrides for gate models that differ from the profile.",
    )
    plausible_min_c: float = Field(
        default=30.0,
        ge=0.0,
        le=45.0,
        description="A reading below this is implausible for a body: device error, not a reading.",
    )
    plausible_max_c: float = Field(
        default=45.0,
        ge=35.0,
        le=100.0,
        description="A reading above this is implausible for a body: device error, never a fever.",
    )

    @model_validator(mode="after")
    def _plausible_range(self) -> TemperatureGateConfig:
        if not self.plausible_min_c <= self.fever_threshold_c < self.plausible_max_c:
            raise ValueError(
                "need plausible_min_c <= fever_threshold_c < plausible_max_c "
                f"({self.plausible_min_c} <= {self.fever_threshold_c} < {self.plausible_max_c})"
            )
        return self
