"""What a command asks of a device, as typed values (CONTRACT.md, "Commands"; issue 8).

The command layer validates a command's ``params`` once, at the trust
boundary (``gateway.commands.model``), and hands the driver one of these; a
driver checks nothing again. ``name`` is the contract's action string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

DoorModeName = Literal["normal", "locked", "open"]

HOLD_SECONDS_MIN = 1
HOLD_SECONDS_MAX = 30
HOLD_SECONDS_DEFAULT = 5


@dataclass(frozen=True, slots=True)
class DoorOpen:
    """``door.open``: release the lock for ``hold_seconds`` (1 to 30)."""

    name: ClassVar[str] = "door.open"
    hold_seconds: int = HOLD_SECONDS_DEFAULT


@dataclass(frozen=True, slots=True)
class SetDoorMode:
    """``door.set_mode``: ``normal``, ``locked`` (cards refused) or ``open`` (held open)."""

    name: ClassVar[str] = "door.set_mode"
    mode: DoorModeName


@dataclass(frozen=True, slots=True)
class Ping:
    """``gateway.ping``: answered by the gateway itself, never by a driver."""

    name: ClassVar[str] = "gateway.ping"


@dataclass(frozen=True, slots=True)
class OtherAction:
    """An action the contract does not name, permitted by configuration; unchecked params."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


DeviceAction = DoorOpen | SetDoorMode | Ping | OtherAction
