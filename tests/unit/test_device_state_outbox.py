"""Drivers' durable state in the outbox: committed with the readings put before it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from drivers.base import StagedStateStore
from gateway.outbox.store import Lane
from gateway.runtime.device_state import OutboxDeviceState
from tests.fakes import FakeClock
from tests.unit.test_outbox import drain, open_outbox, reading


async def test_state_is_committed_and_synced_with_the_readings_before_it(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await open_outbox(tmp_path, clock)
    store = OutboxDeviceState(outbox)
    assert isinstance(store, StagedStateStore)
    outbox.put(reading(clock, 1))
    outbox.put(reading(clock, 2))
    durable = store.stage("ctl-1", "event_index", "405419896:2")
    outbox.put(reading(clock, 3))  # after the stage: may be in the same commit, never before
    syncs = outbox.stats.syncs
    assert not durable.done()  # type: ignore[attr-defined]
    await outbox.commit()
    await durable
    assert outbox.stats.syncs == syncs + 1  # synced at once, as an alarm is
    assert len(await drain(outbox, Lane.ROUTINE)) == 3
    assert await store.get("ctl-1", "event_index") == "405419896:2"
    assert await store.get("ctl-1", "other") is None
    await outbox.close()
    # In the same file, the same table: a crash cannot separate them.
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert db.execute(
        "SELECT value FROM meta WHERE key = 'device-state:ctl-1:event_index'"
    ).fetchone() == ("405419896:2",)
    db.close()


async def test_put_waits_for_the_commit_loop(tmp_path: Path) -> None:
    outbox = await open_outbox(tmp_path)
    store = OutboxDeviceState(outbox)
    runner = asyncio.get_running_loop().create_task(outbox.run())
    try:
        async with asyncio.timeout(5):
            await store.put("ctl-1", "list_version", "405419896:42")
        reopened_value = await store.get("ctl-1", "list_version")
        assert reopened_value == "405419896:42"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await outbox.close()
