"""CommandProcessor with a command store that cannot write: every command still gets its result.

The store is a real SQLite file whose connection refuses writes (``PRAGMA
query_only``: SQLite's own "attempt to write a readonly database"), the error
a read-only remount or a failing card gives. The result must then come from
memory (``ResultQueue.hold``), fetchable by the uplink without the database,
and the finished mark of a command that ran is written once the store takes
writes again (``gateway.commands.marks``), so no restart reports it a second time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.actions import DeviceAction, DoorOpen
from gateway.commands import processor as processor_module
from gateway.commands.marks import PendingMarks
from gateway.commands.results import ResultQueue
from gateway.commands.store import CommandStore
from gateway.outbox.store import BEFORE_ANY_ROW, Lane
from tests.fakes import FakeClock, wait_until
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


def heal_writes(store: CommandStore) -> None:
    """The store takes writes again (the disk was freed, the card remounted)."""
    store._conn.execute("PRAGMA query_only=OFF")


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
        assert (
            "finished mark and audit row retried later, result sent from memory (not durable) "
            "id=cmd-1" in caplog.text
        )
        assert rig.readings.readings[-1].data["status"] == "done"
        # Not written yet: it waits in memory for the store.
        assert [u.id for u in rig.store.unfinished()] == ["cmd-1"]
        assert len(rig.processor.pending_marks) == 1
    finally:
        rig.store.close()


@pytest.fixture
def broken_rig(tmp_path: Path) -> Iterator[Rig]:
    """A rig whose store stops taking writes while the door opens."""
    clock = FakeClock(wall=T0 + 1, mono=RECEIVED_MONO + 0.001)
    door = BreakingDoor("door-east-1", clock)
    made = make_rig(tmp_path, clock, door=door)
    door.store = made.store
    yield made
    made.store.close()


def executions(store: CommandStore) -> list[tuple[str, str, str | None]]:
    rows = store._conn.execute("SELECT id, state, status FROM executions ORDER BY id")
    return [(row[0], row[1], row[2]) for row in rows.fetchall()]


def table_rows(store: CommandStore) -> int:
    return int(store._conn.execute("SELECT count(*) FROM result").fetchone()[0])


async def ran_while_the_store_broke(rig: Rig, *command_ids: str) -> None:
    """Each command accepted, then the store breaks while its door opens."""
    for command_id in command_ids:
        heal_writes(rig.store)  # broken again by the door
        await rig.processor.process(inbound(payload(command_id=command_id)))
    assert len(rig.door.calls) == len(command_ids)


def reported_after_restart(tmp_path: Path) -> list[str | None]:
    """What a new processor on the same file reports at its start."""
    again = make_rig(tmp_path)
    try:
        return [r.id for r in again.processor.report_unfinished()]
    finally:
        again.store.close()


async def test_a_finished_mark_is_written_once_the_store_recovers(
    broken_rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the mark was never retried: a restart, even weeks after the store
    recovered, reported the command failed / timeout after its real result."""
    caplog.set_level(logging.INFO)
    store = broken_rig.store
    await broken_rig.processor.process(inbound(payload()))
    assert executions(store) == [("cmd-1", "accepted", None)]
    heal_writes(store)
    syncs = store.syncs

    assert await broken_rig.processor.retry_finished_marks() == 1

    assert executions(store) == [("cmd-1", "finished", "done")]
    [row] = store.audit_log()
    assert (row.id, row.status.value, row.reason) == ("cmd-1", "done", None)
    assert store.unfinished() == []
    assert len(broken_rig.processor.pending_marks) == 0
    assert store.syncs == syncs + 1, "the written mark is synced durable"
    assert "finished mark written on retry id=cmd-1" in caplog.text
    # Answered once, from memory: the retry queued no second result.
    assert table_rows(store) == 0
    [(body, _, _)] = await sent(store.results)
    assert (body["id"], body["status"]) == ("cmd-1", "done")
    assert await broken_rig.processor.retry_finished_marks() == 0  # nothing left
    assert len(store.audit_log()) == 1
    assert reported_after_restart(tmp_path) == []


async def test_a_finished_mark_stays_pending_while_the_store_fails(
    broken_rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = broken_rig.store
    await ran_while_the_store_broke(broken_rig, "cmd-1", "cmd-2")
    caplog.clear()
    caplog.set_level(logging.INFO)

    assert await broken_rig.processor.retry_finished_marks() == 0

    assert len(broken_rig.processor.pending_marks) == 2
    assert [u.id for u in store.unfinished()] == ["cmd-1", "cmd-2"]
    failures = [r for r in caplog.records if "still failing" in r.getMessage()]
    assert len(failures) == 1, "one line per retry round, not per command"
    assert "pending=2" in failures[0].getMessage()
    assert store.audit_log() == []
    # Restarted now, before the store recovered, the daemon reports them (documented).
    assert reported_after_restart(tmp_path) == ["cmd-1", "cmd-2"]


async def test_the_pending_marks_are_bounded_dropping_the_oldest(
    broken_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    broken_rig.processor.pending_marks = PendingMarks(limit=2)
    await ran_while_the_store_broke(broken_rig, "cmd-1", "cmd-2", "cmd-3")
    assert len(broken_rig.processor.pending_marks) == 2
    assert broken_rig.processor.pending_marks.dropped == 1
    assert (
        "finished mark dropped: 2 pending already (the command store is failing); "
        "a restart reports it failed/timeout id=cmd-1 dropped_total=1" in caplog.text
    )
    heal_writes(broken_rig.store)
    assert await broken_rig.processor.retry_finished_marks() == 2
    # The dropped one is reported at the next start, as before the retry existed.
    assert [u.id for u in broken_rig.store.unfinished()] == ["cmd-1"]


async def test_the_retry_loop_writes_the_mark_on_its_own(
    broken_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_finish_retries`` (the task ``CommandQueue.run`` starts) retries while
    marks are pending; the interval shortened so the test waits for the fact only."""
    monkeypatch.setattr(processor_module, "FINISH_RETRY_S", 0.0)
    retrying = asyncio.create_task(broken_rig.processor.run_finish_retries(), name="retries")
    try:
        await broken_rig.processor.process(inbound(payload()))
        await asyncio.sleep(0)  # a round while the store still fails
        assert len(broken_rig.processor.pending_marks) == 1
        heal_writes(broken_rig.store)
        await wait_until(lambda: not broken_rig.processor.pending_marks)
        assert broken_rig.store.unfinished() == []
    finally:
        retrying.cancel()


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
