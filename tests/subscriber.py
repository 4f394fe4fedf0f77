"""A platform-side MQTT subscriber for tests: collects what the gateway publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any = None
    at: float = field(default_factory=time.monotonic)  # arrival, for latency benchmarks

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Subscribes to ``{root}/#`` with a persistent 3.1.1 session (survives broker restarts)."""

    port: int
    root: str
    client_id: str = "test-platform"
    messages: list[Received] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="test-subscriber")
        async with asyncio.timeout(10):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                    max_queued_incoming_messages=0,
                ) as client:
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.messages.append(
                            Received(
                                str(message.topic),
                                bytes(payload),
                                message.retain,
                                message.properties,
                            )
                        )
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic == f"{self.root}/{suffix}"]

    def batches(self) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(("/readings", "/alarms"))]

    def readings(self) -> list[dict[str, Any]]:
        return [r for m in self.batches() for r in m.json()["readings"]]

    def online_status_seen(self, since: int = 0) -> bool:
        return any(m.json().get("state") == "online" for m in self.on("status")[since:])

    def unique_seqs(self) -> list[int]:
        return sorted({int(r["seq"]) for r in self.readings()})


@contextlib.asynccontextmanager
async def subscribed(port: int, root: str, **options: Any) -> AsyncIterator[Subscriber]:
    """A started ``Subscriber``, stopped on the way out (also when the test fails)."""
    sub = Subscriber(port, root, **options)
    await sub.start()
    try:
        yield sub
    finally:
        await sub.stop()
