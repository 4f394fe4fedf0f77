"""The Modbus lines of one daemon, keyed by port: devices on one line share one bus.

Kept apart from ``drivers.transports.modbus`` so that code holding a pool
(the supervisor, metrics, the driver registry) does not load pymodbus: a
gateway without a Modbus device never imports it.

The pool makes buses and forgets them; it runs none. Its owner (the
supervisor) runs each bus's task and, after a config reload, stops the buses
``release_unused`` hands back: a line no device uses any more is closed, and
the next device on that port gets a new bus with its own settings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig

if TYPE_CHECKING:
    from drivers.transports.modbus import ModbusBus

ModbusConfig = ModbusRtuTransportConfig | ModbusTcpTransportConfig


def bus_key(config: ModbusConfig) -> str:
    """The identity of a line: its port path, or host:port for TCP."""
    if isinstance(config, ModbusRtuTransportConfig):
        if not config.port:
            raise ValueError("modbus_rtu transport has no port (simulated device not started?)")
        return f"rtu:{config.port}"
    if not config.host:
        raise ValueError("modbus_tcp transport has no host (simulated device not started?)")
    return f"tcp:{config.host}:{config.port}"


class BusPool:
    """The buses of one daemon: devices with the same port share one ``ModbusBus``."""

    def __init__(self, **bus_options: Any) -> None:
        """``bus_options`` go to every ``ModbusBus`` (backoff tuning, mostly for tests)."""
        self._bus_options = bus_options
        self._buses: dict[str, ModbusBus] = {}

    def get(self, config: ModbusConfig) -> ModbusBus:
        """Return the bus for ``config``'s line, creating it on first use.

        Raises ValueError when the port has no path yet, or when devices on one
        line disagree about its settings (baud rate, parity, timeouts...).
        """
        key = bus_key(config)
        bus = self._buses.get(key)
        if bus is None:
            # pymodbus loads with the first Modbus device, not with the daemon.
            from drivers.transports.modbus import ModbusBus  # noqa: PLC0415

            bus = ModbusBus(config, name=key, **self._bus_options)
            self._buses[key] = bus
            return bus
        if bus.config != config:
            theirs = bus.config.model_dump()
            ours = config.model_dump()
            diffs = ", ".join(
                f"{name} ({theirs.get(name)!r} vs {ours.get(name)!r})"
                for name in sorted(set(theirs) | set(ours))
                if theirs.get(name) != ours.get(name)
            )
            raise ValueError(
                f"devices on {key} must share one transport configuration; differing: {diffs}"
            )
        return bus

    def release_unused(self, in_use: Collection[str]) -> list[ModbusBus]:
        """Forget every bus whose key (``bus_key``) is not in ``in_use``; return them.

        The caller still owns their tasks: it cancels each ``bus.run()``, which
        closes the port. A later ``get`` for that line makes a new bus.
        """
        unused = [key for key in self._buses if key not in in_use]
        return [self._buses.pop(key) for key in unused]

    @property
    def buses(self) -> list[ModbusBus]:
        """Every bus in use; the supervisor runs ``bus.run()`` for each."""
        return list(self._buses.values())
