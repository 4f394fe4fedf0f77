"""The UHPPOTE controller's configuration (``kind: uhppote``): no driver, no socket."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import DeviceConfigBase


class UhppoteConfig(DeviceConfigBase):
    """One UHPPOTE controller on the LAN."""

    kind: Literal["uhppote"]
    serial: int = Field(ge=1, le=0xFFFFFFFF, description="Controller serial number.")
    address: str | None = Field(
        default=None,
        description="host[:port] (port 60000 by default); absent: find it by broadcast.",
    )
    broadcast: str = Field(
        default="255.255.255.255:60000", description="Where discovery broadcasts go."
    )
    doors: dict[int, str] = Field(
        min_length=1, description="Door numbers 1..4 to door ids (door.event's door, commands)."
    )
    listen: str = Field(
        default="0.0.0.0:60001",
        description="host:port the controller pushes events to (port 0: any free one).",
    )
    advertise: str | None = Field(
        default=None,
        description="IPv4 address given to the controller for pushes; default: the listen host, "
        "or the local address that reaches the controller when listening on 0.0.0.0.",
    )
    timeout_ms: int = Field(
        default=2500, ge=50, le=30_000, description="Reply timeout per try (uhppoted: 2.5 s)."
    )
    catch_up_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="Catch-up on a timer even with no push."
    )
    retry_s: float = Field(
        default=5.0, gt=0, le=600, description="Wait before trying an unreachable controller."
    )
    offline_after_failures: int = Field(default=2, ge=1, le=100)
    backfill_h: float = Field(
        default=24.0,
        ge=0,
        description="On first adoption, older events are counted, not sent.",
    )
    door_delay_s: int = Field(default=5, ge=1, le=255, description="Unlock delay per door, s.")
    time_check_interval_s: float = Field(
        default=600.0, gt=0, description="How often the controller's clock is read."
    )
    drift_alarm_s: float = Field(
        default=60.0, gt=0, description="Alarm when the controller's clock is off by more."
    )
    card_check_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the access list is compared with the card table written.",
    )
    remote_open_wait_s: float = Field(
        default=3.0, gt=0, le=30, description="Wait for the remote-open event after open-door."
    )

    @field_validator("doors")
    @classmethod
    def _doors_1_to_4(cls, doors: dict[int, str]) -> dict[int, str]:
        for number, door in doors.items():
            if not 1 <= number <= 4:
                raise ValueError(f"door numbers are 1..4, not {number}")
            if not re.fullmatch(r"[a-z0-9-]{1,64}", door):
                raise ValueError(f"door id {door!r} must match [a-z0-9-]{{1,64}}")
        if len(set(doors.values())) != len(doors):
            raise ValueError("door ids must differ")
        return doors

    @model_validator(mode="after")
    def _door_ids_not_the_controller(self) -> UhppoteConfig:
        if self.id in self.doors.values():
            raise ValueError("a door id must differ from the controller's device id")
        return self

    @property
    def door_ids(self) -> tuple[str, ...]:
        return tuple(self.doors.values())
