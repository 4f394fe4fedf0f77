"""The dead-letter table of the outbox: set aside in one transaction, counted, kept."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.outbox import store as store_module
from gateway.outbox.store import DB_NAME, Batch, Lane
from tests.fakes import FakeClock
from tests.unit.test_outbox import open_outbox, reading


async def test_set_aside_moves_the_rows_and_counts_them(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    try:
        for n in range(5):
            outbox.put(reading(clock, n))
        await outbox.flush()  # committed and synced: fetchable
        batch = await outbox.fetch(Lane.ROUTINE, 1, 2, 1 << 20)  # seqs 2 and 3
        assert batch is not None
        await outbox.set_aside(batch, "refused: reason code 0x87")
        # A result's lane is the command store: the outbox only keeps it (and
        # must not delete outbox rows that happen to share its id).
        reply = Batch(Lane.RESULT, 4, 4, ['{"v":1,"id":"c1"}'], topic="r/x", correlation=b"k")
        await outbox.set_aside(reply, "cannot publish: Invalid topic.")
        assert outbox.stats.dead_letter == 2
        assert outbox.stats.backlog[Lane.ROUTINE] == 3
        left = await outbox.fetch(Lane.ROUTINE, 0, 100, 1 << 20)
        assert left is not None
        assert [json.loads(b)["seq"] for b in left.bodies] == [1, 4, 5]
    finally:
        await outbox.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        rows = db.execute("SELECT lane, topic, correlation, body, rows, reason FROM dead_letter")
        (lane, topic, corr, body, count, reason), second = rows.fetchall()
    finally:
        db.close()
    assert (lane, topic, corr, count, reason) == (
        "routine",
        None,
        None,
        2,
        "refused: reason code 0x87",
    )
    assert [r["seq"] for r in json.loads(body)] == [2, 3]
    assert second[:3] == ("result", "r/x", b"k")
    # Reopened, the count is read back.
    again = await open_outbox(tmp_path, clock)
    try:
        assert again.stats.dead_letter == 2
    finally:
        await again.close()


async def test_a_version_1_outbox_gets_the_table_and_keeps_its_rows(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    db.execute("BEGIN")
    store_module.SCHEMA.migrations[0](db)
    db.execute("UPDATE meta SET value = 'oldepoch' WHERE key = 'epoch'")
    db.execute("UPDATE meta SET value = '7' WHERE key = 'last_seq'")
    db.execute("INSERT INTO routine VALUES (7, 0, 'd', 'device.status', '{}', 1, NULL, NULL)")
    db.execute("PRAGMA user_version=1")
    db.execute("COMMIT")
    db.close()
    outbox = await open_outbox(tmp_path)
    try:
        assert outbox.moved_aside is None  # migrated, not moved aside
        assert (outbox.stats.epoch, outbox.stats.last_seq) == ("oldepoch", 7)
        assert outbox.stats.dead_letter == 0
        assert outbox.stats.backlog[Lane.ROUTINE] == 1
    finally:
        await outbox.close()
