"""The access processor on a real SQLite file: state announcements, readings, trusted time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.access_rules import WallTime
from drivers.base import Reading, ReadingType
from gateway.access.build import card, snapshot_messages
from gateway.access.inbox import AccessInbox
from gateway.access.processor import PART_STATE_INTERVAL_S, AccessProcessor, AccessSettings
from gateway.access.store import DB_FILENAME, AccessStore, AccessWriter
from gateway.cli.operator_tools import public_key_b64
from tests.fakes import FakeClock

KEY = Ed25519PrivateKey.generate()
INBOX_MAX = 8
GW = "north-gate-1"


class ListSink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def put(self, reading: Reading) -> None:
        self.readings.append(reading)


class Rig:
    def __init__(self, processor: AccessProcessor, sink: ListSink, trusted: list[float]):
        self.processor = processor
        self.sink = sink
        self.trusted = trusted

    async def send(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.processor.handle(json.dumps(message).encode())
        state: dict[str, Any] = json.loads(self.processor.state_json())
        return state


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = AccessStore.open(tmp_path)
    writer = AccessWriter(tmp_path / DB_FILENAME)
    clock = FakeClock()
    sink = ListSink()
    trusted: list[float] = []
    raw = base64.b64decode(public_key_b64(KEY))
    processor = AccessProcessor(
        AccessSettings(gateway_id=GW, public_keys={"k": raw}, key_ids=frozenset({"k"}), skew_s=30),
        writer=writer,
        inbox=AccessInbox(tmp_path / "inbox", max_messages=INBOX_MAX),
        readings=sink,
        clock=clock,
        trusted=WallTime(clock),
        observe_trusted=trusted.append,
    )
    yield Rig(processor, sink, trusted)
    processor.close()
    writer.close()
    store.close()


def parts(count: int, version: int, issued_at: float = 1_795_000_000.0) -> list[dict[str, Any]]:
    cards = [card(f"0A{i:02X}") for i in range(count)]
    return snapshot_messages(
        cards, {}, gateway=GW, version=version, key=KEY, key_id="k", issued_at=issued_at,
        part_size=1,
    )  # fmt: skip


async def test_state_is_announced_at_most_once_a_second_while_parts_arrive(rig: Rig) -> None:
    messages = parts(6, 3)
    changed = rig.processor.state_changed
    changed.clear()
    await rig.send(messages[0])
    assert changed.is_set(), "the first part is announced at once"
    changed.clear()
    for message in messages[1:5]:
        state = await rig.send(message)
    assert not changed.is_set(), "later parts within the second wait"
    assert state["pending"] == {"version": 3, "parts": 6, "received": 5}
    async with asyncio.timeout(PART_STATE_INTERVAL_S + 1):
        await changed.wait()  # ...and are announced once the second is over
    changed.clear()
    state = await rig.send(messages[5])
    assert changed.is_set(), "an applied change is announced at once"
    assert (state["version"], state["cards"], state["pending"]) == (3, 6, None)


async def test_applied_change_is_a_reading_and_trusted_time_is_observed(rig: Rig) -> None:
    (message,) = parts(1, 2, issued_at=1_795_000_100.0)
    await rig.send(message)
    (reading,) = rig.sink.readings
    assert reading.type is ReadingType.ACCESS_CHANGED and reading.device == GW
    assert reading.data["to_version"] == 2 and reading.data["cards"] == 1
    assert rig.trusted == [1_795_000_100.0 - 30]
    assert rig.processor.status() == {
        "version": 2,
        "cards": 1,
        "digest": reading.data["digest"],
    }


async def test_refused_and_ignored_messages_change_only_the_state(rig: Rig) -> None:
    (good,) = parts(1, 2)
    await rig.send(good)
    state = await rig.send(good)
    assert state["ignored"] == 1 and state["last_error"] is None
    forged = dict(good, version=9)
    state = await rig.send(forged)
    assert state["last_error"]["reason"] == "bad_signature"
    assert state["last_error"]["version"] == 9 and state["version"] == 2
    state = await rig.send({"v": 1})
    assert state["last_error"]["reason"] == "bad_schema"
    assert len(rig.sink.readings) == 1
    assert rig.trusted == [1_795_000_000.0 - 30] * 2, "only verified messages are trusted"


async def test_receive_never_waits_and_drops_beyond_the_inbox(rig: Rig) -> None:
    async with asyncio.timeout(5):
        for _ in range(INBOX_MAX + 2):
            await rig.processor.receive(b"{}")
    assert rig.processor.dropped == 2


async def test_run_handles_what_the_inbox_kept_across_a_restart(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "inbox"
    kept = AccessInbox(inbox_dir)
    for message in parts(3, 4):  # received and acknowledged, then the daemon died
        assert kept.put(json.dumps(message).encode())
    store = AccessStore.open(tmp_path)
    writer = AccessWriter(tmp_path / DB_FILENAME)
    clock = FakeClock()
    raw = base64.b64decode(public_key_b64(KEY))
    processor = AccessProcessor(
        AccessSettings(gateway_id=GW, public_keys={"k": raw}, key_ids=frozenset({"k"}), skew_s=30),
        writer=writer,
        inbox=AccessInbox(inbox_dir),
        readings=ListSink(),
        clock=clock,
        trusted=WallTime(clock),
    )
    task = asyncio.create_task(processor.run(), name="access")
    try:
        async with asyncio.timeout(10):
            while processor.state.version != 4:
                processor.state_changed.clear()
                await processor.state_changed.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        processor.close()
        writer.close()
        store.close()
    assert processor.state.cards == 3
    assert list(inbox_dir.iterdir()) == []
