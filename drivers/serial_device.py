"""What the serial-line device kinds' drivers share: the port's life cycle.

The UHF reader and the BLE receiver each own one serial line through
``run_serial``: their drivers take no commands, log the port opening and go
offline (once, with an alarm) when it goes. That is written once here; each
kind adds its protocol. Their configs' shared part is ``drivers.config.serial``.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from drivers.actions import DeviceAction
from drivers.base import (
    ActionNotSupportedError,
    Clock,
    DeviceConfigBase,
    DeviceHealth,
    DeviceState,
    ReadingSink,
)
from drivers.transports.serial import SerialTransport

_LOGGER = logging.getLogger(__name__)


class SerialDeviceDriver:
    """The part of a serial kind's driver that is not its protocol.

    A subclass names the device for messages (``DEVICE_NOUN``) and runs
    ``run_serial(..., on_up=self._on_up, on_down=self._on_down)``.
    """

    DEVICE_NOUN: ClassVar[str]
    """``a UHF reader``: what ``execute`` says it is not able to act on."""

    def __init__(self, config: DeviceConfigBase, *, sink: ReadingSink, clock: Clock) -> None:
        self.device_id = config.id
        self._sink = sink
        self._clock = clock
        self.health = DeviceHealth(device=config.id, sink=sink, clock=clock)

    def actions(self) -> frozenset[str]:
        return frozenset()

    async def execute(self, action: DeviceAction) -> None:
        raise ActionNotSupportedError(
            self.device_id, f"no action {action.name!r} on {self.DEVICE_NOUN}"
        )

    def _on_up(self, transport: SerialTransport) -> None:
        _LOGGER.debug("port open device=%s port=%s", self.device_id, transport.port)

    def _on_down(self, reason: str) -> None:
        self.health.count("port_down")
        self.health.set_state(DeviceState.OFFLINE, f"port: {reason}")

    def _online(self, detail: str) -> bool:
        """The device spoke: record it; True (and an INFO line) when it was not online."""
        self.health.seen()
        return self.health.set_state(DeviceState.ONLINE, detail)

    def _offline_when_silent(self, silent_s: float, limit_s: float, *, detail: str) -> None:
        """Go offline (once) when the device has been silent ``limit_s`` or longer."""
        if silent_s >= limit_s and self.health.state is not DeviceState.OFFLINE:
            self.health.set_state(DeviceState.OFFLINE, f"{detail} for {silent_s:.0f} s")
