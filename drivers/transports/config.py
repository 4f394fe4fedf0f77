"""Configuration models for the transports (``devices[].transport``).

Defaults follow PROTOCOLS.md; the values that vary between models of hardware
live here so an installer changes configuration, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Parity = Literal["N", "E", "O"]
Baudrate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SerialTransportConfig(_Strict):
    """A plain serial line (RS-232, RS-485 or USB serial)."""

    type: Literal["serial"]
    port: str | None = Field(
        default=None,
        description="Device path (/dev/ttyUSB0, /dev/serial/by-id/...); "
        "filled in by the simulator when the device has simulate: true.",
    )
    baudrate: Baudrate = 9600
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    reopen_max_s: float = Field(
        default=30.0, gt=0, le=600, description="Cap of the reopen backoff."
    )


def serial_defaults(value: Any, *, baudrate: int) -> Any:
    """Fill in ``type: serial`` and a device kind's default baud rate (before validation)."""
    if isinstance(value, Mapping):
        return {"type": "serial", "baudrate": baudrate, **value}
    return value


class ModbusRtuTransportConfig(_Strict):
    """Modbus RTU over a serial line; every device on the same port shares one bus."""

    type: Literal["modbus_rtu"]
    port: str | None = Field(default=None, description="Device path, as for serial.")
    baudrate: Baudrate = 9600
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    timeout_ms: int = Field(default=300, ge=20, le=10_000, description="Per-request timeout.")
    retries: int = Field(default=1, ge=0, le=5, description="Retries of a failed request.")


class ModbusTcpTransportConfig(_Strict):
    """Modbus TCP, for RS-485-to-Ethernet converters."""

    type: Literal["modbus_tcp"]
    host: str | None = Field(default=None, description="Converter host; filled in when simulated.")
    port: int = Field(default=502, ge=1, le=65535)
    timeout_ms: int = Field(default=300, ge=20, le=10_000, description="Per-request timeout.")
    retries: int = Field(default=1, ge=0, le=5, description="Retries of a failed request.")


ModbusTransportConfig = Annotated[
    ModbusRtuTransportConfig | ModbusTcpTransportConfig, Field(discriminator="type")
]
