"""A full disk and a locked database, on a real small filesystem (a tmpfs mounted here).

Issue 9 item 5: a full disk must not crash the outbox or the command store;
readings wait in memory and are shed by the size cap's rules (oldest routine
first, never alarms), a ``gateway.dropped`` alarm says so, and writing resumes
when space returns. A database is never moved aside for a full disk or a lock.
A command whose result cannot be written still gets it, sent from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.actions import DeviceAction, DoorOpen
from drivers.base import Priority, ReadingType, make_reading
from gateway.commands.store import DB_FILENAME as COMMANDS_DB
from gateway.commands.store import CommandStore
from gateway.outbox.store import DB_NAME, MAX_HELD_WHILE_FULL, Lane, Outbox
from gateway.storage.sqlite import is_disk_full
from tests.broker import Mosquitto
from tests.fakes import FakeClock, wait_until
from tests.integration.test_uplink import ROOT, gateway, wait_connected
from tests.outboxes import site_outbox
from tests.subscriber import subscribed
from tests.unit.test_command_store import make_command
from tests.unit.test_commands import RECEIVED_MONO, T0, FakeDoor, inbound, make_rig, payload

pytestmark = pytest.mark.integration


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real filesystem that fills up (the tests run as root)."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it (delete it to free the space)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def new_outbox(directory: Path, clock: FakeClock, commit_interval_s: float = 0.2) -> Outbox:
    return site_outbox(directory, clock, commit_interval_s=commit_interval_s)


def routine(clock: FakeClock, n: int) -> object:
    return make_reading(
        clock, "temp-gate-1", ReadingType.TEMPERATURE_BODY, {"celsius": 36.0, "n": n}
    )


async def test_outbox_survives_a_full_disk_sheds_routine_and_resumes(small_fs: Path) -> None:
    clock = FakeClock()
    outbox = new_outbox(small_fs, clock, commit_interval_s=0.05)
    await outbox.open()
    owner = asyncio.create_task(outbox.run(), name="outbox")
    try:
        outbox.put(routine(clock, 0))  # type: ignore[arg-type]
        await outbox.flush()
        filler = fill(small_fs)
        for n in range(1, MAX_HELD_WHILE_FULL + 501):
            outbox.put(routine(clock, n))  # type: ignore[arg-type]
        for _ in range(3):
            outbox.put(
                make_reading(clock, "wb-1", ReadingType.WEARABLE_SOS, {"w": 1}, Priority.ALARM)
            )
        await wait_until(lambda: outbox.disk_full)
        await wait_until(lambda: outbox.stats.dropped >= 500)
        assert not owner.done(), "a full disk must not end the outbox task"
        filler.unlink()  # space returns
        await wait_until(lambda: not outbox.disk_full)
        await outbox.flush()
        assert not owner.done()
        alarms = await outbox.fetch(Lane.ALARM, 0, 100, 1 << 20)
        assert alarms is not None
        types = [b.split('"type":"')[1].split('"')[0] for b in alarms.bodies]
        assert types.count("wearable.sos") == 3, "alarms are never shed"
        notices = [json.loads(b)["data"] for b in alarms.bodies if "gateway.dropped" in b]
        assert notices and all(d["reason"] == "disk_full" for d in notices)
        kept = await outbox.fetch(Lane.ROUTINE, 0, 1_000_000, 1 << 30)
        assert kept is not None and kept.bodies[-1].count(f'"n":{MAX_HELD_WHILE_FULL + 500}')
        # CONTRACT.md: each notice names a seq range (shed in memory too, where they
        # never got a seq), and every seq given out is a row held or in one range.
        explained: set[int] = set()
        for d in notices:
            assert isinstance(d["from_seq"], int) and isinstance(d["to_seq"], int), d
            assert d["to_seq"] - d["from_seq"] + 1 == d["count"], d
            explained |= set(range(d["from_seq"], d["to_seq"] + 1))
        held = {json.loads(b)["seq"] for b in (*alarms.bodies, *kept.bodies)}
        assert not held & explained
        assert held | explained == set(range(1, outbox.stats.last_seq + 1))
        assert len(explained) == outbox.stats.dropped >= 500
    finally:
        owner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await owner
        await outbox.close()
    db = sqlite3.connect(small_fs / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert list(small_fs.glob("*.corrupt-*")) == []


def test_command_store_on_a_full_disk_raises_disk_full_and_recovers(small_fs: Path) -> None:
    clock = FakeClock()
    store = CommandStore.open(small_fs, clock=clock)
    kwargs = {"received_at": clock.wall(), "response_topic": None, "correlation_data": None}
    assert store.accept(make_command("before"), **kwargs)  # type: ignore[arg-type]
    filler = fill(small_fs)
    # Enough rows that the WAL must grow past what it already holds.
    with pytest.raises(sqlite3.OperationalError) as caught:
        for n in range(2000):
            store.accept(make_command(f"during-{n:04d}-{'x' * 200}"), **kwargs)  # type: ignore[arg-type]
    assert is_disk_full(caught.value), f"not the real error: {caught.value}"
    filler.unlink()
    assert store.accept(make_command("after"), **kwargs)  # type: ignore[arg-type]
    assert store.is_seen("before"), "used ids are not forgotten"
    store.close()
    again = CommandStore.open(small_fs, clock=clock)
    assert again.is_seen("before") and again.is_seen("after")
    again.close()
    assert list(small_fs.glob("*.corrupt-*")) == []


async def test_a_locked_outbox_is_not_moved_aside(tmp_path: Path) -> None:
    clock = FakeClock()
    first = new_outbox(tmp_path, clock)
    await first.open()
    epoch = first.stats.epoch
    await first.close()
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    second = new_outbox(tmp_path, clock)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await second.open()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await second.close()
    assert list(tmp_path.glob("*.corrupt-*")) == []
    third = new_outbox(tmp_path, clock)
    await third.open()
    assert third.stats.epoch == epoch, "a lock must not start a new epoch"
    await third.close()


def fill_past_the_wal(directory: Path) -> Path:
    """Empty the command store's WAL, then fill the disk: its next commit cannot be written."""
    other = sqlite3.connect(directory / COMMANDS_DB)
    try:  # a WAL that still had room would take one more transaction
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        other.close()
    return fill(directory)


class FillingDoor(FakeDoor):
    """A door that opens while its directory's disk fills up, once ``fill_dir`` is set."""

    fill_dir: Path | None = None
    filler: Path | None = None

    async def execute(self, action: DeviceAction) -> None:
        await super().execute(action)
        if self.fill_dir is not None:
            self.filler = fill_past_the_wal(self.fill_dir)


async def test_a_full_disk_still_answers_every_command_from_memory(
    small_fs: Path, tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the result of a command the full store could not record was lost:
    the platform never heard of it, even of a door that had opened."""
    clock = FakeClock(wall=T0 + 1, mono=RECEIVED_MONO + 0.001)
    door = FillingDoor("door-east-1", clock)
    rig = make_rig(small_fs, clock, door=door)
    store = rig.store
    caplog.set_level("ERROR")
    try:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url], results=store.results) as (_, uplink, _),
        ):
            await wait_connected(uplink)

            def answered() -> list[tuple[str, str, str | None]]:
                bodies = [m.json() for m in sub.on("commands/results")]
                return [(b["id"], b["status"], b["reason"]) for b in bodies]

            await rig.processor.process(inbound(payload(command_id="cmd-1")))
            await sub.wait_for(lambda: len(answered()) == 1)  # durable, from the table

            # The disk is full before the command: it is not run, and says so.
            filler = fill_past_the_wal(small_fs)
            await rig.processor.process(inbound(payload(command_id="cmd-2")))
            assert "database or disk is full" in caplog.text
            await sub.wait_for(lambda: len(answered()) == 2)
            assert len(door.calls) == 1
            filler.unlink()

            # The disk fills while the door opens: it opened, and says so.
            door.fill_dir = small_fs
            await rig.processor.process(inbound(payload(command_id="cmd-3")))
            await sub.wait_for(lambda: len(answered()) == 3)
            assert door.calls == [DoorOpen(hold_seconds=5)] * 2
            assert answered() == [
                ("cmd-1", "done", None),
                ("cmd-2", "failed", "device_error"),
                ("cmd-3", "done", None),
            ]
            await wait_until(lambda: store.results.held == 0)  # PUBACKed

            # Space returns: cmd-3's finished mark, kept in memory, is written
            # (before, it stayed "accepted" and a restart answered it again).
            assert [u.id for u in store.unfinished()] == ["cmd-3"]
            assert door.filler is not None
            door.filler.unlink()
            door.filler = None
            assert await rig.processor.retry_finished_marks() == 1
            assert store.unfinished() == []
            assert [row.id for row in store.audit_log()] == ["cmd-1", "cmd-3"]
            assert store.results.backlog == 0, "no second result queued"
    finally:
        if door.filler is not None:
            door.filler.unlink()
        store.close()
    assert caplog.text.count("result sent from memory (not durable)") == 2
