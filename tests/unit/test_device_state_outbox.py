"""Drivers' durable state in the outbox: committed with the readings put before it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from drivers.base import StagedStateStore
from gateway.outbox.store import Lane
from gateway.runtime.device_state import OutboxDeviceState
from tests.fakes import FakeClock
from tests.outboxes import site_outbox
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
    assert not durable.done()  # type: ignore[attr-defined]  # committed, not yet synced
    assert outbox.stats.syncs == syncs  # no sync per device event (the SD card)
    await outbox.flush()
    await durable
    assert outbox.stats.syncs == syncs + 1
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


async def test_put_and_stage_complete_through_the_commit_and_sync_loops(tmp_path: Path) -> None:
    outbox = await open_outbox(tmp_path)
    store = OutboxDeviceState(outbox)
    runner = asyncio.get_running_loop().create_task(outbox.run())
    try:
        async with asyncio.timeout(5):
            await store.put("ctl-1", "list_version", "405419896:42")
            await store.stage("ctl-1", "event_index", "405419896:7")
            assert await store.get("ctl-1", "event_index") == "405419896:7"
        reopened_value = await store.get("ctl-1", "list_version")
        assert reopened_value == "405419896:42"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await outbox.close()


async def test_a_reading_waits_one_commit_interval_even_while_deletes_wait(tmp_path: Path) -> None:
    """Before: with PUBACK deletes waiting, a new routine reading waited until they were due
    (up to a sync interval), so a door event took up to a second to reach the broker."""
    clock = FakeClock()
    outbox = site_outbox(tmp_path, clock, commit_interval_s=0.05, sync_interval_s=30.0)
    await outbox.open()
    runner = asyncio.get_running_loop().create_task(outbox.run())
    try:
        outbox.put(reading(clock, 1))
        async with asyncio.timeout(5):
            while outbox.stats.committed < 1:
                await asyncio.sleep(0.01)
        await outbox.sync()  # only synced readings may be sent
        batch = await outbox.fetch(Lane.ROUTINE, 0, 10, 1 << 20)
        assert batch is not None
        outbox.ack(batch)  # a delete now waits for the (30 s) sync interval
        await asyncio.sleep(0.1)  # the commit loop is now timing the deletes
        outbox.put(reading(clock, 2))
        async with asyncio.timeout(2):  # not 30 s
            while outbox.stats.committed < 2:
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await outbox.close()
