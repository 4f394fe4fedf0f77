"""What every driver shares: readings, device health, the sink and the clock.

A driver turns frames into typed ``Reading``s and hands them to a
``ReadingSink``. A ``Reading`` has no identity; only the outbox gives it an
``epoch``/``seq`` (CONTRACT.md, "Readings"). Contract strings are defined once
here, as ``StrEnum`` members whose values match CONTRACT.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from drivers.actions import DeviceAction
from drivers.transports.errors import TransportError, TransportTimeoutError

_LOGGER = logging.getLogger(__name__)


class ReadingType(StrEnum):
    """Reading types of CONTRACT.md."""

    DOOR_EVENT = "door.event"
    EBIKE_PASS = "ebike.pass"
    TEMPERATURE_BODY = "temperature.body"
    WEARABLE_VITALS = "wearable.vitals"
    WEARABLE_SOS = "wearable.sos"
    WEARABLE_FALL = "wearable.fall"
    WEARABLE_PRESENCE = "wearable.presence"
    DEVICE_STATUS = "device.status"
    AUDIT_COMMAND = "audit.command"
    GATEWAY_DROPPED = "gateway.dropped"
    ACCESS_CHANGED = "access.changed"


class Priority(StrEnum):
    ROUTINE = "routine"
    ALARM = "alarm"


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    ERROR = "error"


class DeviceError(Exception):
    """The device answered, but with an exception or a reported fault."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"device={device}: {reason}")
        self.device = device
        self.reason = reason


class ActionNotSupportedError(DeviceError):
    """The driver has no such action (the command path maps it to not_permitted)."""


# The device error family a driver raises from ``execute``; the command layer
# maps these to result reasons and never sees a transport error.


class DeviceOffline(DeviceError):  # the names issue 8 gives the family
    """The device cannot be reached: its port or bus is gone (``device_offline``)."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time (``timeout``)."""


class DeviceRefused(DeviceError):
    """The device answered, refusing or failing the request (``device_error``)."""


@contextlib.contextmanager
def device_errors(device: str) -> Iterator[None]:
    """Turn the transport's errors raised inside into the device error family."""
    try:
        yield
    except TransportTimeoutError as exc:
        raise DeviceTimeout(device, exc.reason) from exc
    except TransportError as exc:
        raise DeviceOffline(device, exc.reason) from exc


class Clock(Protocol):
    """Time source injected everywhere, so tests control time."""

    def wall(self) -> float:
        """Seconds since the Unix epoch (may be wrong before NTP sync)."""
        ...

    def monotonic(self) -> float:
        """Seconds on the system-wide monotonic clock (CLOCK_MONOTONIC)."""
        ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """The loop's sleep: with ``monotonic`` this is a ``drivers.transports.timing.Timer``."""
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class Reading:
    """One device event, before the outbox gives it an identity.

    ``wall_ts`` is the wall clock when the event was read, ``mono_ts`` the
    monotonic clock at the same moment; the outbox uses the second to correct
    the first once the system clock is synchronised.
    """

    device: str
    type: ReadingType
    data: Mapping[str, Any]
    priority: Priority
    wall_ts: float
    mono_ts: float

    @property
    def sheddable(self) -> bool:
        """Whether the size cap may drop this reading (CONTRACT.md: never alarms or audit)."""
        return self.priority is Priority.ROUTINE and self.type is not ReadingType.AUDIT_COMMAND


class ReadingSink(Protocol):
    """Where drivers put readings. ``put`` never blocks and never raises for capacity."""

    def put(self, reading: Reading) -> None: ...


def make_reading(
    clock: Clock,
    device: str,
    type_: ReadingType,
    data: Mapping[str, Any],
    priority: Priority = Priority.ROUTINE,
) -> Reading:
    """Stamp a reading with both clocks, now."""
    return Reading(
        device=device,
        type=type_,
        data=data,
        priority=priority,
        wall_ts=clock.wall(),
        mono_ts=clock.monotonic(),
    )


@dataclass(slots=True)
class DeviceHealth:
    """A device's online state and counters, shared with status and metrics.

    ``set_state`` emits a ``device.status`` reading on transitions only: an
    expected condition is a state, not a stream of log lines (STYLE.md §6).
    Going offline is an alarm (CONTRACT.md, ``device.status``).
    """

    device: str
    sink: ReadingSink
    clock: Clock
    state: DeviceState | None = None
    detail: str = ""
    last_seen_wall: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    """Extra facts for the device's status entry (a door's ``mode``)."""

    def set_state(self, state: DeviceState, detail: str = "") -> bool:
        """Record the state; return True (and emit a reading) when it changed.

        Every driver's state changes are logged here, in one format:
        ``device online: device=ID``, ``device offline: device=ID detail=...``.
        """
        if state is self.state:
            self.detail = detail
            return False
        self.state = state
        self.detail = detail
        _LOGGER.log(
            logging.INFO if state is DeviceState.ONLINE else logging.WARNING,
            "device %s: device=%s%s",
            state.value,
            self.device,
            f" detail={detail}" if detail else "",
        )
        priority = Priority.ALARM if state is DeviceState.OFFLINE else Priority.ROUTINE
        self.sink.put(
            make_reading(
                self.clock,
                self.device,
                ReadingType.DEVICE_STATUS,
                {"state": state.value, "detail": detail},
                priority,
            )
        )
        return True

    def seen(self) -> None:
        """The device answered or spoke just now."""
        self.last_seen_wall = self.clock.wall()

    def count(self, name: str, n: int = 1) -> None:
        """Bump a named counter (``frames_rejected``, ``timeouts``...)."""
        self.counters[name] = self.counters.get(name, 0) + n


class Driver(Protocol):
    """One device: polls or listens, emits readings, executes its actions."""

    device_id: str
    health: DeviceHealth

    async def run(self) -> None:
        """Run until cancelled. Raise on a failure the supervisor should restart."""
        ...

    def actions(self) -> frozenset[str]:
        """Command actions this device supports (``door.open``, ``door.set_mode``)."""
        ...

    async def execute(self, action: DeviceAction) -> None:
        """Carry out an action, its parameters already checked.

        Raises:
            ActionNotSupportedError: not an action of this device.
            DeviceOffline, DeviceTimeout, DeviceRefused: it failed (the
                ``device_errors`` context manager turns transport errors into these).
        """
        ...


class DeviceConfigBase(BaseModel):
    """Fields every ``devices[]`` entry has. Each kind subclasses this with
    ``kind: Literal[...]``, its ``transport`` and its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9-]{1,64}$", description="Device id, unique per gateway.")
    simulate: bool = Field(
        default=False,
        description="Start this kind's simulator on a pseudo-terminal (or loopback TCP) "
        "and attach to it instead of hardware.",
    )


class DeviceStateStore(Protocol):
    """Durable per-device key/value state kept by the gateway for its drivers.

    ``put`` returns once the value is durable (committed and synced), so a
    driver may act on the device only after that (e.g. move a controller's
    event bookmark).
    """

    async def get(self, device_id: str, key: str) -> str | None: ...

    async def put(self, device_id: str, key: str, value: str) -> None: ...


@runtime_checkable
class StagedStateStore(DeviceStateStore, Protocol):
    """A state store that can queue a value now, in order with the readings put before it.

    ``stage`` never waits; the awaitable it returns completes once the value
    is durable. A driver's event loop then never waits for storage, yet the
    value is committed with exactly the readings that preceded it.
    """

    def stage(self, device_id: str, key: str, value: str) -> Awaitable[None]: ...
