"""The outbox on a real SQLite file: identity, lanes, acks, size cap, clock, recovery."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from drivers.base import Priority, Reading, ReadingType, make_reading
from gateway.outbox.store import DB_NAME, SCHEMA_VERSION, Lane, Outbox
from gateway.timefmt import parse_rfc3339
from tests.fakes import FakeClock, FakeClockSync


def reading(clock: FakeClock, n: int = 0, *, alarm: bool = False, audit: bool = False) -> Reading:
    if audit:
        return make_reading(clock, "gw", ReadingType.AUDIT_COMMAND, {"id": f"c{n}"})
    if alarm:
        return make_reading(
            clock, "wb-1", ReadingType.WEARABLE_SOS, {"wearer": "w1"}, Priority.ALARM
        )
    return make_reading(
        clock,
        "temp-gate-1",
        ReadingType.TEMPERATURE_BODY,
        {"celsius": 36.5 + n / 1000, "threshold": 37.3, "fever": False},
    )


async def open_outbox(
    tmp_path: Path,
    clock: FakeClock | None = None,
    sync: FakeClockSync | None = None,
    *,
    boot: str = "boot-a",
    max_bytes: int = 64 * 1024 * 1024,
    sync_interval_s: float = 1.0,
) -> Outbox:
    outbox = Outbox(
        tmp_path,
        site="changqing",
        gateway_id="north-gate-1",
        clock=clock or FakeClock(),
        clock_sync=sync or FakeClockSync(),
        boot_id=boot,
        max_bytes=max_bytes,
        sync_interval_s=sync_interval_s,
    )
    await outbox.open()
    return outbox


async def drain(outbox: Outbox, lane: Lane) -> list[dict[str, object]]:
    await outbox.sync()  # only synced rows can be fetched (CONTRACT 1.1)
    batch = await outbox.fetch(lane, 0, 1_000_000, 1 << 30)
    return [] if batch is None else [json.loads(b) for b in batch.bodies]


async def test_seq_is_gapless_and_id_carries_epoch(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    for n in range(5):
        outbox.put(reading(clock, n))
    await outbox.commit()
    rows = await drain(outbox, Lane.ROUTINE)
    epoch = outbox.stats.epoch
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["id"] == f"north-gate-1:{epoch}:1"
    assert rows[0]["type"] == "temperature.body"
    assert rows[0]["priority"] == "routine"
    assert rows[0]["device"] == "temp-gate-1"
    assert "clock" not in rows[0]
    assert parse_rfc3339(str(rows[0]["ts"])) == pytest.approx(clock.wall(), abs=0.001)
    await outbox.close()


async def test_epoch_and_seq_survive_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    outbox.put(reading(clock))
    await outbox.close()
    again = await open_outbox(tmp_path, clock)
    again.put(reading(clock))
    await again.commit()
    assert again.stats.epoch == outbox.stats.epoch
    assert [r["seq"] for r in await drain(again, Lane.ROUTINE)] == [1, 2]
    await again.close()


async def test_alarms_go_to_their_lane_and_sync_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    outbox.put(reading(clock))
    outbox.put(reading(clock, alarm=True))
    syncs = outbox.stats.syncs
    await outbox.commit()  # no explicit sync: the commit syncs because of the alarm
    assert outbox.stats.syncs == syncs + 1
    # Fetchable at once, and the routine reading too: the same synced commit carried it.
    assert [r["seq"] for r in await drain(outbox, Lane.ALARM)] == [2]
    assert [r["seq"] for r in await drain(outbox, Lane.ROUTINE)] == [1]
    assert outbox.stats.backlog[Lane.ALARM] == 1
    await outbox.close()


async def test_routine_commit_does_not_sync(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    outbox.put(reading(clock))
    syncs = outbox.stats.syncs
    await outbox.commit()
    assert outbox.stats.syncs == syncs
    await outbox.flush()
    assert outbox.stats.syncs == syncs + 1
    await outbox.close()


async def test_fetch_is_bounded_and_ack_deletes(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    for n in range(10):
        outbox.put(reading(clock, n))
    await outbox.commit()
    await outbox.sync()
    by_count = await outbox.fetch(Lane.ROUTINE, 0, 3, 1 << 20)
    assert by_count is not None and (by_count.first, by_count.last, by_count.count) == (1, 3, 3)
    one_size = len(by_count.bodies[0]) + 1
    by_bytes = await outbox.fetch(Lane.ROUTINE, 3, 100, one_size * 2 + one_size // 2)
    assert by_bytes is not None and (by_bytes.first, by_bytes.last) == (4, 5)
    outbox.ack(by_count)
    await outbox.commit()
    assert outbox.stats.backlog[Lane.ROUTINE] == 10, "deletes wait for the sync interval"
    await outbox.commit(include_acks=True)
    assert outbox.stats.backlog[Lane.ROUTINE] == 7
    assert outbox.stats.last_ack_at == clock.wall()
    assert [r["seq"] for r in await drain(outbox, Lane.ROUTINE)] == list(range(4, 11))
    await outbox.close()


async def test_legacy_results_are_handed_over_then_dropped(tmp_path: Path) -> None:
    """Results an older version queued in the outbox leave for the command store."""
    outbox = await open_outbox(tmp_path)
    await outbox.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("INSERT INTO result (topic, correlation, body) VALUES (NULL, NULL, 'a')")
    db.execute("INSERT INTO result (topic, correlation, body) VALUES ('reply/x', x'01', 'a')")
    db.commit()
    db.close()
    again = await open_outbox(tmp_path)
    try:
        assert await again.take_legacy_results() == [(None, None, "a"), ("reply/x", b"\x01", "a")]
        with pytest.raises(ValueError, match="command store"):
            await again.fetch(Lane.RESULT, 0, 10, 1 << 20)
        await again.drop_legacy_results()
        assert await again.take_legacy_results() == []
    finally:
        await again.close()


async def test_size_cap_sheds_oldest_routine_never_alarms_or_audit(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock, max_bytes=200 * 1024)
    outbox.put(reading(clock, alarm=True))
    outbox.put(reading(clock, audit=True))
    for n in range(3000):
        outbox.put(reading(clock, n))
        if n % 100 == 0:
            await outbox.commit()
    await outbox.commit()
    alarms = await drain(outbox, Lane.ALARM)
    routine = await drain(outbox, Lane.ROUTINE)
    dropped = [a for a in alarms if a["type"] == "gateway.dropped"]
    assert alarms[0]["type"] == "wearable.sos"
    assert dropped, "shedding must be explained"
    assert routine[0]["type"] == "audit.command"
    # Every missing seq is explained by a gateway.dropped range, and counts add up.
    present = {int(str(r["seq"])) for r in routine + alarms}
    missing = set(range(1, outbox.stats.last_seq + 1)) - present
    explained: set[int] = set()
    total = 0
    for notice in dropped:
        data = notice["data"]
        assert isinstance(data, dict) and data["reason"] == "size_cap"
        explained |= set(range(data["from_seq"], data["to_seq"] + 1))
        total += data["count"]
    assert missing <= explained
    assert total == len(missing) == outbox.stats.dropped
    # The oldest went first: what is left is the newest.
    assert max(missing) < min(int(str(r["seq"])) for r in routine[1:])
    await outbox.close()


async def test_unsynced_readings_are_corrected_once_the_clock_syncs(tmp_path: Path) -> None:
    clock = FakeClock(wall=946_684_800.0)  # booted believing it is 2000-01-01
    sync = FakeClockSync(synced=False)
    outbox = await open_outbox(tmp_path, clock, sync)
    outbox.put(reading(clock, 1))
    await outbox.commit()
    before = await drain(outbox, Lane.ROUTINE)
    assert before[0]["clock"] == "unsynced"
    taken_mono = clock.monotonic()
    clock.advance(5)
    clock.step_wall(1_795_000_000.0 - clock.wall())  # NTP steps to the real time
    sync.synced = True
    outbox.put(reading(clock, 2))
    await outbox.commit()
    rows = await drain(outbox, Lane.ROUTINE)
    assert all("clock" not in r for r in rows)
    true_ts = clock.wall() - (clock.monotonic() - taken_mono)
    assert parse_rfc3339(str(rows[0]["ts"])) == pytest.approx(true_ts, abs=0.002)
    assert parse_rfc3339(str(rows[1]["ts"])) == pytest.approx(clock.wall(), abs=0.002)
    await outbox.close()


async def test_readings_of_an_earlier_boot_stay_unsynced(tmp_path: Path) -> None:
    clock = FakeClock(wall=946_684_800.0)
    outbox = await open_outbox(tmp_path, clock, FakeClockSync(synced=False), boot="boot-a")
    outbox.put(reading(clock))
    await outbox.close()
    # Power cut; the next boot syncs its clock. The old monotonic stamps mean nothing now.
    later = await open_outbox(tmp_path, FakeClock(), FakeClockSync(synced=True), boot="boot-b")
    later.put(reading(FakeClock()))
    await later.commit()
    rows = await drain(later, Lane.ROUTINE)
    assert rows[0]["clock"] == "unsynced"
    assert "clock" not in rows[1]
    await later.close()


async def test_corrupt_database_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    outbox = await open_outbox(tmp_path)
    assert outbox.moved_aside is not None
    assert Path(outbox.moved_aside).read_bytes().startswith(b"this is not a database")
    outbox.put(reading(FakeClock()))
    await outbox.commit()
    assert outbox.stats.last_seq == 1
    await outbox.close()


async def test_newer_schema_is_moved_aside(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    outbox = await open_outbox(tmp_path)
    assert outbox.moved_aside is not None and Path(outbox.moved_aside).exists()
    await outbox.close()


async def test_a_database_of_another_shape_is_moved_aside(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE routine (seq INTEGER PRIMARY KEY, body TEXT)")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.commit()
    db.close()
    outbox = await open_outbox(tmp_path)
    assert outbox.moved_aside is not None and Path(outbox.moved_aside).exists()
    outbox.put(reading(FakeClock()))
    await outbox.commit()
    assert outbox.stats.last_seq == 1
    await outbox.close()


async def test_routine_rows_are_fetchable_only_once_synced(tmp_path: Path) -> None:
    # CONTRACT 1.1: a reading is published only once its commit is durable.
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    outbox.new_data.clear()
    outbox.put(reading(clock))
    await outbox.commit()
    assert await outbox.fetch(Lane.ROUTINE, 0, 100, 1 << 20) is None
    assert not outbox.new_data.is_set(), "the uplink must not be woken for unsynced rows"
    await outbox.sync()
    await asyncio.sleep(0)  # the worker signals the loop with call_soon_threadsafe
    assert outbox.new_data.is_set()
    batch = await outbox.fetch(Lane.ROUTINE, 0, 100, 1 << 20)
    assert batch is not None and (batch.first, batch.last) == (1, 1)
    await outbox.close()


async def test_rows_left_unsynced_by_a_killed_process_are_synced_before_sending(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    first = await open_outbox(tmp_path, clock)
    first.put(reading(clock))
    await first.commit()  # committed, not synced: then the process is killed
    assert await first.fetch(Lane.ROUTINE, 0, 100, 1 << 20) is None
    again = await open_outbox(tmp_path, clock)
    assert again.stats.syncs == 1, "open syncs what an earlier process left unsynced"
    batch = await again.fetch(Lane.ROUTINE, 0, 100, 1 << 20)
    assert batch is not None and batch.last == 1
    await again.close()
    await first.close()


async def test_ack_deletes_and_syncs_follow_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock, sync_interval_s=1.0)
    for n in range(3):
        outbox.put(reading(clock, n))
    await outbox.flush()
    assert outbox.sync_due_in() == pytest.approx(1.0)
    batch = await outbox.fetch(Lane.ROUTINE, 0, 100, 1 << 20)
    assert batch is not None
    outbox.ack(batch)
    clock.advance(0.5)
    assert outbox.sync_due_in() == pytest.approx(0.5)
    await outbox.commit()
    assert outbox.stats.backlog[Lane.ROUTINE] == 3, "deletes wait for the sync interval"
    clock.advance(0.6)
    assert outbox.sync_due_in() == 0.0
    await outbox.commit()
    assert outbox.stats.backlog[Lane.ROUTINE] == 0
    await outbox.close()
