"""The door node's configuration (``kind: door_node``): no driver, no bus."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from drivers.liveness import PolledDeviceConfig
from drivers.transports.config import ModbusTransportConfig


class DoorMode(StrEnum):
    """``door.set_mode`` modes (CONTRACT.md)."""

    NORMAL = "normal"
    LOCKED = "locked"
    OPEN = "open"


class DoorNodeConfig(PolledDeviceConfig):
    """A door node: relay/input board and card reader on one Modbus bus."""

    kind: Literal["door_node"]
    transport: ModbusTransportConfig
    door: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]{1,64}$",
        description="Door name in events and in the access list's doors=; defaults to the id.",
    )
    relay_slave: int = Field(default=1, ge=1, le=247, description="Relay/input board slave id.")
    reader_slave: int = Field(default=2, ge=1, le=247, description="Card reader slave id.")
    lock_relay: int = Field(default=1, ge=1, le=8, description="Relay (1..8) driving the lock.")
    pulse_ms: int = Field(
        default=3000,
        ge=100,
        le=60_000,
        description="Lock release on a card or the exit button, ms (board pulse, 100 ms units).",
    )
    poll_interval_ms: int = Field(
        default=200, ge=20, le=10_000, description="Poll of the reader and the door inputs, ms."
    )
    forced_window_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="An opening within this long of a grant, exit or remote open is legitimate.",
    )
    held_open_s: float = Field(
        default=30.0, gt=0, le=86_400, description="A legitimate opening longer than this alarms."
    )
    mode: DoorMode = Field(
        default=DoorMode.NORMAL,
        description="Mode at start: normal, locked, open. A mode set by a remote "
        "door.set_mode is kept across restarts and wins over this one.",
    )
    stale_card_ms: int = Field(
        default=2000,
        ge=100,
        le=60_000,
        description="A waiting card is acted on only if the reader was seen idle this recently; "
        "older ones (after a restart or an outage) are discarded, never open the door.",
    )

    @model_validator(mode="after")
    def _distinct_slaves(self) -> DoorNodeConfig:
        if self.relay_slave == self.reader_slave:
            raise ValueError("relay_slave and reader_slave must differ")
        return self

    @property
    def door_name(self) -> str:
        return self.door or self.id
