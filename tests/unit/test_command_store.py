"""CommandStore on a real SQLite file: replay memory, atomic accept, recovery, audit."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.commands import store as store_module
from gateway.commands.model import CommandStatus, RejectReason, VerifiedCommand
from gateway.commands.results import ResultMessage
from gateway.commands.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    SEEN_RETENTION_S,
    AuditRecord,
    CommandStore,
)
from gateway.outbox.store import Lane
from tests.fakes import FakeClock

T0 = 1_795_939_200.0


def make_command(command_id: str = "cmd-1", *, expires_at: float = T0 + 30) -> VerifiedCommand:
    return VerifiedCommand(
        id=command_id,
        action="door.open",
        device="door-east-1",
        params={"hold_seconds": 5},
        key_id="platform-2026",
        issued_at=T0,
        expires_at=expires_at,
    )


def make_record(
    command_id: str | None = "cmd-1",
    status: CommandStatus = CommandStatus.DONE,
    reason: RejectReason | None = None,
) -> AuditRecord:
    return AuditRecord(
        id=command_id,
        action="door.open",
        device="door-east-1",
        status=status,
        reason=reason,
        received_at=T0,
        key_id="platform-2026",
        latency_ms=12.5,
        at=T0 + 0.0125,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[CommandStore]:
    opened = CommandStore.open(tmp_path, clock=clock)
    yield opened
    opened.close()


def accept(store: CommandStore, command: VerifiedCommand) -> bool:
    return store.accept(
        command, received_at=T0, response_topic="resp/topic", correlation_data=b"\x01corr"
    )


def test_file_settings(tmp_path: Path, store: CommandStore) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_accept_uses_the_id_once(store: CommandStore) -> None:
    assert not store.is_seen("cmd-1")
    assert accept(store, make_command())
    assert store.is_seen("cmd-1")
    assert not accept(store, make_command())


def test_replay_memory_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    first = CommandStore.open(tmp_path, clock=clock)
    assert accept(first, make_command())
    first.close()
    second = CommandStore.open(tmp_path, clock=clock)
    try:
        assert second.is_seen("cmd-1")
        assert not accept(second, make_command())
    finally:
        second.close()


def test_accept_is_atomic(tmp_path: Path, store: CommandStore) -> None:
    # An executions row for the id without a seen row: the second insert of
    # accept() fails, and the first must be rolled back with it.
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(
        "INSERT INTO executions (id, action, device, key_id, received_at, state) "
        "VALUES ('cmd-1', 'door.open', 'door-east-1', 'k', 0, 'finished')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.IntegrityError):
        accept(store, make_command())
    assert not store.is_seen("cmd-1")


def test_unfinished_is_reported_after_reopen(tmp_path: Path, clock: FakeClock) -> None:
    first = CommandStore.open(tmp_path, clock=clock)
    accept(first, make_command("cmd-1"))
    accept(first, make_command("cmd-2"))
    first.finish(make_record("cmd-2"), [])
    first.close()  # the gateway "dies" with cmd-1 running

    second = CommandStore.open(tmp_path, clock=clock)
    try:
        [pending] = second.unfinished()
        assert pending.id == "cmd-1"
        assert (pending.action, pending.device, pending.key_id) == (
            "door.open",
            "door-east-1",
            "platform-2026",
        )
        assert pending.response_topic == "resp/topic"
        assert pending.correlation_data == b"\x01corr"
        second.finish(make_record("cmd-1", CommandStatus.FAILED, RejectReason.TIMEOUT), [])
        assert second.unfinished() == []
        assert not accept(second, make_command("cmd-1"))  # never runs again
    finally:
        second.close()


def test_audit_rows_are_never_updated(tmp_path: Path, store: CommandStore) -> None:
    store.record(make_record(None, CommandStatus.REJECTED, RejectReason.BAD_JSON), [])
    accept(store, make_command())
    store.finish(make_record(), [])
    log = store.audit_log()
    assert [(r.id, r.status, r.reason) for r in log] == [
        (None, CommandStatus.REJECTED, RejectReason.BAD_JSON),
        ("cmd-1", CommandStatus.DONE, None),
    ]
    assert log[1] == make_record()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit SET status = 'done'")
    finally:
        conn.close()


def test_audit_retention_by_age_and_size(tmp_path: Path) -> None:
    clock = FakeClock(wall=T0, mono=0.0)
    store = CommandStore.open(tmp_path, clock=clock, audit_retention_s=86_400, audit_max_rows=5)
    try:
        old = make_record(None, CommandStatus.REJECTED, RejectReason.REPLAYED)
        store.record(old, [])
        clock.step_wall(2 * 86_400)  # the first row is now past retention
        for n in range(7):
            store.record(dataclasses.replace(make_record(f"cmd-{n}"), at=clock.wall()), [])
        store.prune()
        assert [r.id for r in store.audit_log()] == [f"cmd-{n}" for n in range(2, 7)]
    finally:
        store.close()


def test_version_1_store_is_migrated_to_allow_pruning(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    store_module.SCHEMA.migrations[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO audit (status, received_at, at) VALUES ('rejected', ?, ?)", (T0, T0))
    conn.close()
    clock = FakeClock(wall=T0 + 100 * 86_400, mono=0.0)
    store = CommandStore.open(tmp_path, clock=clock)  # prunes the 100-day-old row at once
    try:
        assert store.audit_log() == []
    finally:
        store.close()


def test_record_can_spend_an_id(store: CommandStore) -> None:
    store.record(
        make_record("cmd-9", CommandStatus.REJECTED, RejectReason.NOT_PERMITTED),
        [],
        keep_id_until=T0 + 30,
    )
    assert store.is_seen("cmd-9")
    store.record(make_record("cmd-10", CommandStatus.REJECTED, RejectReason.EXPIRED), [])
    assert not store.is_seen("cmd-10")


def test_ids_are_kept_until_well_after_expiry(store: CommandStore, clock: FakeClock) -> None:
    accept(store, make_command(expires_at=T0 + 30))
    clock.step_wall(30 + SEEN_RETENTION_S - 1)
    assert store.prune() == 0
    assert store.is_seen("cmd-1")
    clock.step_wall(2)
    assert store.prune() == 1
    assert not store.is_seen("cmd-1")


def test_pruning_is_lazy_and_rate_limited(store: CommandStore, clock: FakeClock) -> None:
    accept(store, make_command("old", expires_at=T0 + 30))
    clock.step_wall(30 + SEEN_RETENTION_S + 1)
    accept(store, make_command("new", expires_at=clock.wall() + 30))
    assert store.is_seen("old")  # pruned at open less than an hour ago: not yet
    clock.advance(3601)
    accept(store, make_command("newer", expires_at=clock.wall() + 30))
    assert not store.is_seen("old")
    assert store.is_seen("new")


def test_corrupt_file_is_moved_aside_loudly(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="gateway.commands.store"):
        store = CommandStore.open(tmp_path, clock=clock)
    try:
        assert accept(store, make_command())
    finally:
        store.close()
    [aside] = tmp_path.glob(f"{DB_FILENAME}.corrupt-*")
    assert aside.read_bytes() == b"this is not a database" * 100
    assert "moved aside" in caplog.text
    assert str(aside) in caplog.text


def test_newer_schema_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = CommandStore.open(tmp_path, clock=clock)
    store.close()
    assert len(list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*"))) == 1
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_empty_file_is_migrated_from_version_zero(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / DB_FILENAME).touch()
    store = CommandStore.open(tmp_path, clock=clock)
    try:
        assert accept(store, make_command())
    finally:
        store.close()
    assert list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*")) == []


ANSWER = [ResultMessage('{"id":"cmd-1"}'), ResultMessage('{"id":"cmd-1"}', "resp/t", b"c")]


async def test_result_is_committed_with_the_finished_mark(tmp_path: Path, clock: FakeClock) -> None:
    """The bug this table fixes: "finished" and "result queued" are one transaction."""
    first = CommandStore.open(tmp_path, clock=clock)
    accept(first, make_command("cmd-1"))
    first.finish(make_record("cmd-1"), ANSWER)
    # Committed, not yet synced: not sendable (durable before sent).
    assert await first.results.fetch(Lane.RESULT, 0, 10, 1 << 20) is None
    first.close()  # as a kill would leave it: no sync since the commit
    again = CommandStore.open(tmp_path, clock=clock)
    try:
        assert again.unfinished() == []
        assert again.results.pending() == ANSWER
        batch = await again.results.fetch(Lane.RESULT, 0, 10, 1 << 20)  # open synced it
        assert batch is not None
        assert (batch.bodies, batch.topic, batch.correlation) == (['{"id":"cmd-1"}'], None, None)
        second = await again.results.fetch(Lane.RESULT, batch.last, 10, 1 << 20)
        assert second is not None and (second.topic, second.correlation) == ("resp/t", b"c")
        again.results.ack(batch)
        assert again.results.backlog == 1
    finally:
        again.close()


async def test_results_become_sendable_only_through_a_completed_sync(store: CommandStore) -> None:
    store.queue_result(ANSWER[:1])
    mark = store.results.committed()
    store.queue_result(ANSWER[:1])  # committed after the sync started: not covered
    store.sync()
    store.results.durable_through(mark)
    assert store.results.new_data.is_set()
    first = await store.results.fetch(Lane.RESULT, 0, 10, 1 << 20)
    assert first is not None and first.last == mark
    assert await store.results.fetch(Lane.RESULT, first.last, 10, 1 << 20) is None


def test_a_failed_finish_queues_no_result_and_stays_unfinished(store: CommandStore) -> None:
    accept(store, make_command("cmd-1"))
    before = store.results.committed()
    broken = [ANSWER[0], ResultMessage(None)]  # type: ignore[arg-type]  # body NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.finish(make_record("cmd-1"), broken)
    assert store.results.pending() == []
    assert store.results.committed() == before
    assert [u.id for u in store.unfinished()] == ["cmd-1"]
    assert store.audit_log() == []
