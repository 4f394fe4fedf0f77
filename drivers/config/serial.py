"""What the serial-line kinds' configs share: the kind's default baud rate, a port unless simulated.

Light on purpose (pydantic and the transport configs only): the registry loads
configs without their drivers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from drivers.base import DeviceConfigBase
from drivers.transports.config import SerialTransportConfig, serial_defaults


def serial_transport_field(baudrate: int, description: str) -> Any:
    """The ``transport`` field of a serial kind: ``type: serial`` at ``baudrate`` when absent."""
    return Field(
        default_factory=lambda: SerialTransportConfig(type="serial", baudrate=baudrate),
        description=description,
    )


class SerialDeviceConfig(DeviceConfigBase):
    """A device on its own serial line; a subclass sets ``DEFAULT_BAUDRATE``."""

    DEFAULT_BAUDRATE: ClassVar[int]
    transport: SerialTransportConfig

    @field_validator("transport", mode="before")
    @classmethod
    def _transport_defaults(cls, value: Any) -> Any:
        return serial_defaults(value, baudrate=cls.DEFAULT_BAUDRATE)

    @model_validator(mode="after")
    def _port_unless_simulated(self) -> SerialDeviceConfig:
        if self.transport.port is None and not self.simulate:
            raise ValueError("transport.port is required unless simulate is true")
        return self
