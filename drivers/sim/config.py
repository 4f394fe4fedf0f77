"""What the simulators read of a device's configuration, as protocols.

A simulator needs a few facts of the device it stands in for: its id (which
names its pty), its line and its addresses. It takes them from the device's
config entry, but through these protocols rather than the drivers' config
classes, so the simulators import no driver module (the import contracts in
pyproject.toml): any object with these attributes will do, the validated
``devices[]`` entries included.

``SerialDeviceConfig`` is the base of every serial-line simulator's config;
``ModbusDeviceConfig`` of the Modbus ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from drivers.codecs.temperature_gate_map import RegisterMap
from drivers.transports.config import (
    ModbusRtuTransportConfig,
    ModbusTcpTransportConfig,
    SerialTransportConfig,
)


class SerialDeviceConfig(Protocol):
    """A device on a serial line: its id names the pty, its transport gives the baud rate."""

    @property
    def id(self) -> str: ...

    @property
    def transport(self) -> SerialTransportConfig: ...


class UhfReaderSimConfig(SerialDeviceConfig, Protocol):
    @property
    def address(self) -> int:
        """The reader's address (0xFF broadcast)."""
        ...


class BleReceiverSimConfig(SerialDeviceConfig, Protocol):
    @property
    def wearers(self) -> Mapping[str, str]:
        """Band MAC to wearer id: the bands the simulator advertises."""
        ...


class ModbusDeviceConfig(Protocol):
    """A device on a Modbus line (RTU on a pty, or TCP on loopback)."""

    @property
    def id(self) -> str: ...

    @property
    def transport(self) -> ModbusRtuTransportConfig | ModbusTcpTransportConfig: ...


class DoorNodeSimConfig(ModbusDeviceConfig, Protocol):
    @property
    def relay_slave(self) -> int: ...

    @property
    def reader_slave(self) -> int: ...

    @property
    def lock_relay(self) -> int: ...


class GateRegisters(Protocol):
    def register_map(self) -> RegisterMap: ...


class TemperatureGateSimConfig(ModbusDeviceConfig, Protocol):
    @property
    def slave(self) -> int: ...

    @property
    def registers(self) -> GateRegisters: ...


class UhppoteSimConfig(Protocol):
    """A networked door controller: its serial number and its door numbers."""

    @property
    def serial(self) -> int: ...

    @property
    def doors(self) -> Mapping[int, str]:
        """Door number (1..4) to door id."""
        ...
