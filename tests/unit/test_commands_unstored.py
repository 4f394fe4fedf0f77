"""CommandProcessor with a command store that cannot write: every command still gets its result.

The store is a real SQLite file whose connection refuses writes (``PRAGMA
query_only``: SQLite's own "attempt to write a readonly database"), the error
a read-only remount or a failing card gives. The result must then come from
memory (``ResultQueue.hold``), fetchable by the uplink without the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.actions import DeviceAction, DoorOpen
from gateway.commands.results import ResultQueue
from gateway.commands.store import CommandStore
from gateway.outbox.store import BEFORE_ANY_ROW, Lane
from tests.fakes import FakeClock
from tests.unit.test_commands import (
    RECEIVED_MONO,
    T0,
    FakeDoor,
    Rig,
    inbound,
    make_rig,
    payload,
)


def fail_writes(store: CommandStore) -> None:
    """From now on every write of the store fails in SQLite itself."""
    store._conn.execute("PRAGMA query_only=ON")  # the real connection


class BreakingDoor(FakeDoor):
    """Opens (the command ran), and the store breaks while it does."""

    store: CommandStore | None = None

    async def execute(self, action: DeviceAction) -> None:
        await super().execute(action)
        assert self.store is not None
        fail_writes(self.store)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path)
    yield made
    made.store.close()


async def sent(queue: ResultQueue) -> list[tuple[dict[str, Any], str | None, bytes | None]]:
    """What the uplink would publish now: every message from a fresh cursor."""
    out = []
    after = BEFORE_ANY_ROW
    while (batch := await queue.fetch(Lane.RESULT, after, 10, 1 << 20)) is not None:
        out.append((json.loads(batch.bodies[0]), batch.topic, batch.correlation))
        after = max(after, batch.last)
    return out


async def test_store_failing_at_accept_answers_from_memory_without_running(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    fail_writes(rig.store)
    result = await rig.processor.process(
        inbound(payload(), response_topic="reply/r", correlation_data=b"c1")
    )
    assert result is not None
    assert rig.door.calls == [], "an id that cannot be made durable must not run"
    [(body, _, _), (again, topic, corr)] = await sent(rig.store.results)
    assert body == again == json.loads(result.to_json())
    assert (body["id"], body["status"], body["reason"]) == ("cmd-1", "failed", "device_error")
    assert (topic, corr) == ("reply/r", b"c1")
    assert rig.readings.readings[-1].data["reason"] == "device_error"
    assert "result sent from memory (not durable)" in caplog.text


async def test_store_failing_after_the_door_ran_still_answers_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(wall=T0 + 1, mono=RECEIVED_MONO + 0.001)
    door = BreakingDoor("door-east-1", clock)
    rig = make_rig(tmp_path, clock, door=door)
    door.store = rig.store
    try:
        caplog.set_level(logging.ERROR)
        result = await rig.processor.process(inbound(payload()))
        assert result is not None
        assert rig.door.calls == [DoorOpen(hold_seconds=5)]
        [(body, topic, _)] = await sent(rig.store.results)
        assert (body["id"], body["status"], body["reason"], topic) == ("cmd-1", "done", None, None)
        assert "audit row lost, result sent from memory (not durable) id=cmd-1" in caplog.text
        assert rig.readings.readings[-1].data["status"] == "done"
        # Its finished mark is lost with the audit row: a restart reports it
        # failed / timeout too, after this real answer.
        assert [u.id for u in rig.store.unfinished()] == ["cmd-1"]
    finally:
        rig.store.close()


async def test_store_failing_for_a_refusal_answers_from_memory(rig: Rig) -> None:
    fail_writes(rig.store)
    await rig.processor.process(inbound(payload(device="door-nowhere")))
    [(body, _, _)] = await sent(rig.store.results)
    assert (body["status"], body["reason"]) == ("rejected", "unknown_device")


async def test_store_failing_for_an_unverified_message_answers_from_memory(rig: Rig) -> None:
    fail_writes(rig.store)
    assert await rig.processor.process(inbound(b"not json")) is None
    [(body, topic, _)] = await sent(rig.store.results)
    assert (body["id"], body["status"], body["reason"], topic) == (
        None,
        "rejected",
        "bad_json",
        None,
    )


async def test_a_closed_store_still_answers(rig: Rig) -> None:
    """Not even reads work: the result is still fetchable, with no database at all."""
    rig.store.close()
    result = await rig.processor.process(inbound(payload()))
    assert result is not None and rig.door.calls == []
    batch = await rig.store.results.fetch(Lane.RESULT, BEFORE_ANY_ROW, 10, 1 << 20)
    assert batch is not None and json.loads(batch.bodies[0])["reason"] == "device_error"
    rig.store.results.ack(batch)
    assert rig.store.results.held == 0
