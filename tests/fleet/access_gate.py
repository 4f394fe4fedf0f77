"""The gate's side of CONTRACT.md "Access lists", reduced to what the platform can observe.

The reconciler's test drives cases a real gateway cannot be made to show on
demand (a gate reporting a list the platform never sent; the exact messages
received); bench_access_fleet runs the real daemons. It follows this reading
of the contract: verify the signature, ignore versions not above the one
held, refuse a delta whose ``base`` is not the version held
(``base_mismatch``), gather snapshot parts and apply them at once, and
publish the retained ``access/state`` with the digest computed here
independently of central/access.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.timefmt import rfc3339


def contract_digest(cards: dict[str, dict[str, Any]], profiles: dict[str, Any]) -> str:
    doc = {"cards": [cards[c] for c in sorted(cards)], "profiles": profiles}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class AccessGate:
    port: int
    site: str
    gateway: str
    public_key: bytes
    version: int = 0
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    digest_override: str | None = None  # a gate whose list differs from what was sent
    received: list[dict[str, Any]] = field(default_factory=list)
    last_error: dict[str, Any] | None = None
    ignored: int = 0
    _parts: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def root(self) -> str:
        return f"estates/{self.site}/gateways/{self.gateway}"

    @property
    def digest(self) -> str:
        return self.digest_override or contract_digest(self.cards, self.profiles)

    async def start(self) -> None:
        self._ready.clear()
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        # aiomqtt's exit waits without a limit for its DISCONNECT to be seen
        # through; seen to hang on RabbitMQ, so a second cancel ends that wait.
        done, _ = await asyncio.wait({self._task}, timeout=5)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
        if self._task.done() and not self._task.cancelled():
            self._task.exception()  # retrieved: a failed session is not this stop's error

    async def wait_version(self, version: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.version != version:
                self._changed.clear()
                await self._changed.wait()

    async def _run(self) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"{self.site}-{self.gateway}",
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
        ) as client:
            await client.subscribe(f"{self.root}/access", qos=1)
            await self._publish_state(client)
            self._ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes | bytearray)
                self._handle(json.loads(message.payload))
                await self._publish_state(client)
                self._changed.set()

    def _handle(self, msg: dict[str, Any]) -> None:
        sig = base64.b64decode(msg.pop("sig"))
        text = json.dumps(msg, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, text.encode())
        assert msg["gateway"] == self.gateway
        self.received.append(msg)
        if msg["version"] <= self.version:
            self.ignored += 1
            return
        if msg["type"] == "access.delta":
            if msg["base"] != self.version:
                self.last_error = {
                    "version": msg["version"],
                    "reason": "base_mismatch",
                    "at": rfc3339(time.time()),
                }
                return
            for card in msg["delete"]:
                self.cards.pop(card, None)
            for entry in msg["upsert"]:
                assert sorted(entry) == sorted(
                    ["card", "holder", "doors", "from", "until", "profile"]
                )
                self.cards[entry["card"]] = entry
            self.profiles.update(msg.get("profiles", {}))
            for name in msg.get("delete_profiles", []):
                self.profiles.pop(name, None)
            self._applied(msg["version"])
            return
        parts = self._parts.setdefault(msg["version"], {})
        parts[msg["part"]] = msg
        if len(parts) == msg["parts"]:
            self.cards = {e["card"]: e for p in parts.values() for e in p["cards"]}
            self.profiles = parts[1]["profiles"]
            del self._parts[msg["version"]]
            self._applied(msg["version"])

    def _applied(self, version: int) -> None:
        self.version = version
        self.digest_override = None
        self.last_error = None

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        state = {
            "v": 1,
            "version": self.version,
            "cards": len(self.cards),
            "digest": self.digest,
            "at": rfc3339(time.time()),
            "pending": None,
            "ignored": self.ignored,
            "last_error": self.last_error,
        }
        await client.publish(f"{self.root}/access/state", json.dumps(state), qos=1, retain=True)
