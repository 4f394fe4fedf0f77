"""A simulated Modbus device on a line of its own, with its ambient life.

The door node and the temperature gate simulators are the same ``Simulator``
around different registers: a ``ModbusSimServer`` on a pty (RTU) or a
loopback port (TCP), one device on it, and, in ambient mode, one task that
plays residents or passers-by so the shipped configuration has something to
report. ``ModbusLineSimulator`` is that shell; a subclass adds its device and
its ``_ambient`` loop.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TypedDict, Unpack

from drivers.sim.ambient import Ambient
from drivers.sim.base import SimEndpoint
from drivers.sim.config import ModbusDeviceConfig
from drivers.sim.modbus_server import LineTiming, ModbusSimServer
from drivers.transports.config import ModbusRtuTransportConfig


class LineOptions(TypedDict, total=False):
    """How a simulated line behaves; every key is optional."""

    ambient: bool
    """Play the device's ambient life (default True)."""
    wire_timing: bool
    """Deliver replies at the line's baud rate (default False)."""
    reply_delay_s: float
    """The device's own answer delay (default 0)."""
    rng: random.Random | None
    """Randomness of the ambient life (default: a fresh one)."""


class ModbusLineSimulator:
    """One simulated Modbus device on its own line (a ``Simulator``)."""

    def __init__(
        self, config: ModbusDeviceConfig, workdir: Path, **options: Unpack[LineOptions]
    ) -> None:
        ambient = options.get("ambient", True)
        wire_timing = options.get("wire_timing", False)
        reply_delay_s = options.get("reply_delay_s", 0.0)
        rng = options.get("rng")
        transport = config.transport
        line = (
            LineTiming(transport.baudrate, transport.parity, transport.stopbits)
            if isinstance(transport, ModbusRtuTransportConfig)
            else None
        )
        self.server = ModbusSimServer(
            name=f"sim {config.id}",
            line=line,
            wire_timing=wire_timing,
            reply_delay_s=reply_delay_s,
        )
        self._line_config = config
        self._workdir = workdir
        self._rng = rng or random.Random()
        self.ambient = Ambient(
            f"sim {config.id} ambient", self._ambient, enabled=ambient, rng=self._rng
        )

    async def start(self) -> SimEndpoint:
        """Open the pty (RTU) or the loopback port (TCP); return where to attach."""
        config = self._line_config
        endpoint = await self.server.start_line(config.transport, self._workdir, config.id)
        self.ambient.start()
        return endpoint

    async def stop(self) -> None:
        """Stop the ambient task and close the line."""
        await self.ambient.stop()
        self._stopping()
        await self.server.stop()

    def unplug(self) -> None:
        self.server.unplug()

    def replug(self) -> None:
        self.server.replug()

    async def _ambient(self) -> None:
        """The device's ambient life, until cancelled (a subclass's)."""
        raise NotImplementedError

    def _stopping(self) -> None:
        """Release the device's own timers before the line closes (a subclass's, if any)."""
