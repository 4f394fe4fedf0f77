"""ResultQueue's results held in memory, for a command store that cannot write them.

The queue is the real one, on a real command store file; the drain's walk is
played by ``drain_session`` (a fresh cursor from ``BEFORE_ANY_ROW``, kept from
going back, as ``Drain.run`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.commands.results import MAX_HELD_MESSAGES, ResultMessage, ResultQueue
from gateway.commands.store import CommandStore
from gateway.outbox.store import BEFORE_ANY_ROW, Batch, Lane
from tests.fakes import FakeClock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CommandStore]:
    opened = CommandStore.open(tmp_path, clock=FakeClock())
    yield opened
    opened.close()


def durable_row(store: CommandStore, body: str) -> None:
    store.queue_result([ResultMessage(body)])
    store.sync()
    store.results.durable_through(store.results.committed())


async def drain_session(queue: ResultQueue, *, after: int = BEFORE_ANY_ROW) -> list[Batch]:
    """Every batch one drain session would fetch from ``after`` on, without acking."""
    out: list[Batch] = []
    while (batch := await queue.fetch(Lane.RESULT, after, 10, 1 << 20)) is not None:
        out.append(batch)
        after = max(after, batch.last)
    return out


def bodies(batches: list[Batch]) -> list[str]:
    return [b for batch in batches for b in batch.bodies]


async def test_held_messages_are_fetched_first_and_acked_away(store: CommandStore) -> None:
    durable_row(store, "table-1")
    queue = store.results
    queue.new_data.clear()
    queue.hold([ResultMessage("held-1"), ResultMessage("held-1", "reply/r", b"c")])
    assert queue.new_data.is_set(), "the uplink must wake for them"
    assert (queue.held, queue.backlog) == (2, 3)
    batches = await drain_session(queue)
    assert bodies(batches) == ["held-1", "held-1", "table-1"]
    assert (batches[1].topic, batches[1].correlation) == ("reply/r", b"c")
    assert batches[0].last < batches[1].first < 0 < batches[2].first
    assert queue.pending()[:2] == [
        ResultMessage("held-1"),
        ResultMessage("held-1", "reply/r", b"c"),
    ]
    queue.ack(batches[0])
    queue.ack(batches[2])
    assert bodies(await drain_session(queue)) == ["held-1"]
    assert (queue.held, queue.backlog) == (1, 1)


async def test_unacked_held_message_is_sent_again_next_session(store: CommandStore) -> None:
    queue = store.results
    queue.hold([ResultMessage("held-1")])
    first = await drain_session(queue)
    assert bodies(first) == ["held-1"]
    assert await queue.fetch(Lane.RESULT, first[-1].last, 10, 1 << 20) is None
    # The connection dropped before the PUBACK: a fresh cursor finds it again.
    again = await drain_session(queue)
    assert [(b.first, b.bodies) for b in again] == [(first[0].first, ["held-1"])]
    queue.ack(again[0])
    assert await drain_session(queue) == []


async def test_message_held_mid_session_is_fetched_once(store: CommandStore) -> None:
    """The cursor is already past the table's rows: a held id below it still goes."""
    durable_row(store, "table-1")
    queue = store.results
    session = await drain_session(queue)
    cursor = session[-1].last
    assert cursor > 0
    queue.hold([ResultMessage("held-late")])
    late = await drain_session(queue, after=cursor)
    assert bodies(late) == ["held-late"]
    assert await drain_session(queue, after=cursor) == [], "once per session"
    assert bodies(await drain_session(queue)) == ["held-late", "table-1"]  # next session


async def test_the_bound_drops_the_oldest(
    store: CommandStore, caplog: pytest.LogCaptureFixture
) -> None:
    queue = store.results
    caplog.set_level(logging.ERROR)
    queue.hold([ResultMessage(f"r{n}") for n in range(MAX_HELD_MESSAGES + 2)])
    assert queue.held == MAX_HELD_MESSAGES
    assert queue.held_dropped == 2
    sent = bodies(await drain_session(queue))
    assert sent[0] == "r2" and sent[-1] == f"r{MAX_HELD_MESSAGES + 1}"
    assert len(sent) == MAX_HELD_MESSAGES
    assert caplog.text.count("command result dropped") == 2


async def test_held_messages_need_no_database(store: CommandStore) -> None:
    queue = store.results
    queue.hold([ResultMessage("held-1"), ResultMessage("held-2")])
    store.close()  # the database is what failed
    assert queue.backlog == 2  # a metrics scrape still gets an answer
    batch = await queue.fetch(Lane.RESULT, BEFORE_ANY_ROW, 10, 1 << 20)
    assert batch is not None and batch.bodies == ["held-1"]
    queue.ack(batch)
    batch = await queue.fetch(Lane.RESULT, batch.last, 10, 1 << 20)
    assert batch is not None and batch.bodies == ["held-2"]
    queue.ack(batch)
    assert queue.held == 0
