"""The device kinds: their config union, driver factories and simulators.

The one place that knows every kind, so the gateway builds drivers from
configuration without importing each driver itself. The config union is made
of the small ``drivers.config`` modules; a kind's driver module (and with it
pymodbus, pyserial or uhppoted) is imported only when a device of that kind is
built, and a simulator only when a device asks for one, so a gateway loads the
code of the kinds it has and nothing else (issue 8, "Memory").
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from drivers.access_rules import DoorAccess
from drivers.base import Clock, DeviceStateStore, Driver, ReadingSink
from drivers.config.ble_receiver import BleReceiverConfig
from drivers.config.door_node import DoorNodeConfig
from drivers.config.temperature_gate import TemperatureGateConfig
from drivers.config.uhf_reader import UhfReaderConfig
from drivers.config.uhppote import UhppoteConfig
from drivers.sim.base import SimEndpoint, Simulator
from drivers.transports.bus_pool import BusPool, bus_key
from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig

AnyDeviceConfig = (
    DoorNodeConfig | UhfReaderConfig | TemperatureGateConfig | BleReceiverConfig | UhppoteConfig
)
DeviceConfig = Annotated[AnyDeviceConfig, Field(discriminator="kind")]

_SIMULATORS = {
    "door_node": "drivers.sim.door_node",
    "uhf_reader": "drivers.sim.uhf_reader",
    "temperature_gate": "drivers.sim.temperature_gate",
    "ble_receiver": "drivers.sim.ble_receiver",
    "uhppote": "drivers.sim.uhppote",
}


@dataclass(frozen=True, slots=True)
class DriverDeps:
    """What drivers may be given: never MQTT or SQLite (DESIGN.md)."""

    sink: ReadingSink
    clock: Clock
    buses: BusPool
    access: DoorAccess
    # Durable per-device state (a door's mode, a controller's event bookmark),
    # kept with the readings; None keeps nothing across restarts.
    state: DeviceStateStore | None = None
    # Networked controllers (uhppote): the site's zone and whether the clock is trusted.
    zone: dt.tzinfo = dt.UTC
    clock_trusted: Callable[[], bool] = field(default=lambda: False)


def build_driver(config: AnyDeviceConfig, deps: DriverDeps) -> Driver:
    """Make the driver of one configured device, importing its kind's module now."""
    # Each branch imports its own driver: a kind nobody configured costs nothing.
    if isinstance(config, DoorNodeConfig):
        from drivers import door_node  # noqa: PLC0415 - loaded with the kind

        return door_node.build_driver(
            config,
            sink=deps.sink,
            clock=deps.clock,
            buses=deps.buses,
            access=deps.access,
            state=deps.state,
        )
    if isinstance(config, TemperatureGateConfig):
        from drivers import temperature_gate  # noqa: PLC0415 - loaded with the kind

        return temperature_gate.build_driver(
            config, sink=deps.sink, clock=deps.clock, buses=deps.buses
        )
    if isinstance(config, UhppoteConfig):
        from drivers import uhppote  # noqa: PLC0415 - loaded with the kind

        if deps.state is None:
            raise ValueError("a uhppote controller needs the gateway's device state store")
        return uhppote.build_driver(
            config,
            sink=deps.sink,
            clock=deps.clock,
            state=deps.state,
            zone=deps.zone,
            clock_trusted=deps.clock_trusted,
            access=deps.access.access,
        )
    if isinstance(config, UhfReaderConfig):
        from drivers import uhf_reader  # noqa: PLC0415 - loaded with the kind

        return uhf_reader.build_driver(config, sink=deps.sink, clock=deps.clock)
    from drivers import ble_receiver  # noqa: PLC0415 - loaded with the kind

    return ble_receiver.build_driver(config, sink=deps.sink, clock=deps.clock)


def make_simulator(config: AnyDeviceConfig, workdir: Path, *, ambient: bool = True) -> Simulator:
    """The simulator of the device's kind, speaking its protocol on a pty or loopback TCP."""
    module = importlib.import_module(_SIMULATORS[config.kind])
    simulator: Simulator = module.make_simulator(config, workdir, ambient=ambient)
    return simulator


def udp_listen(config: AnyDeviceConfig) -> str | None:
    """The fixed UDP address a device listens on for pushes (None: none, or any free port)."""
    if not isinstance(config, UhppoteConfig) or config.simulate:
        return None  # a simulated controller listens on a free loopback port (attach)
    return None if config.listen.endswith(":0") else config.listen


def modbus_line(config: AnyDeviceConfig) -> str | None:
    """The ``BusPool`` key of the Modbus line the device is on (None: not a Modbus device).

    Give it the config the driver was built from (a simulated device's, once attached).
    """
    if isinstance(config, UhppoteConfig):
        return None
    transport = config.transport
    if isinstance(transport, ModbusRtuTransportConfig | ModbusTcpTransportConfig):
        return bus_key(transport)
    return None


def door_ids(config: AnyDeviceConfig) -> tuple[str, ...]:
    """The door ids a device names besides its own id (a controller's doors)."""
    return config.door_ids if isinstance(config, UhppoteConfig) else ()


def attach(config: AnyDeviceConfig, endpoint: SimEndpoint) -> AnyDeviceConfig:
    """The device's config pointed at a started simulator."""
    if isinstance(config, UhppoteConfig):  # UDP on loopback: the address, and listen there too
        return config.model_copy(
            update={
                "address": f"{endpoint.host}:{endpoint.tcp_port}",
                "listen": f"{endpoint.host}:0",
            }
        )
    update: dict[str, Any] = {}
    if endpoint.port is not None:
        update["port"] = endpoint.port
    if endpoint.host is not None:
        update["host"] = endpoint.host
    if endpoint.tcp_port is not None:
        update["port"] = endpoint.tcp_port
    transport = config.transport.model_copy(update=update)
    return config.model_copy(update={"transport": transport})
