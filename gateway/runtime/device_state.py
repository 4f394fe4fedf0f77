"""The drivers' durable key/value state (``drivers.base.DeviceStateStore``), in the outbox.

Kept in the outbox database, written in the same transaction as the readings
put before it: a driver's bookmark ("the last device event I turned into
readings") is then durable exactly when those readings are, never before or
after them (issue 11, "Events, never missed").
"""

from __future__ import annotations

from collections.abc import Awaitable

from gateway.outbox.store import Outbox


class OutboxDeviceState:
    """``DeviceStateStore`` over the outbox's meta table."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def get(self, device_id: str, key: str) -> str | None:
        return await self._outbox.get_state(f"{device_id}:{key}")

    async def put(self, device_id: str, key: str, value: str) -> None:
        await self._outbox.put_state(f"{device_id}:{key}", value)

    def stage(self, device_id: str, key: str, value: str) -> Awaitable[None]:
        return self._outbox.stage_state(f"{device_id}:{key}", value)
