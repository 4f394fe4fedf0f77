"""The durable outbox: the only place readings live between a device and the broker.

Implements CONTRACT.md "Readings": every accepted reading gets ``epoch``/``seq``
when it is committed, leaves only after the broker's PUBACK, and is shed only
by the size cap (oldest routine first, explained by ``gateway.dropped``).

Durability windows (README, "Delivery guarantee"):

* Readings are group-committed every ``commit_interval_ms``: a process crash
  loses at most the readings of the last interval.
* The database runs WAL with ``synchronous=NORMAL``, which does not sync on
  commit; the outbox itself ``fdatasync``s the WAL at most every
  ``sync_interval_ms`` while there is something unsynced, so a power cut loses
  at most that window, and an idle gateway writes nothing.
* Alarms are committed and synced at once. Command results are not here:
  they live in the command store, committed with the command's finished
  mark (``gateway.commands.results``); the ``result`` table only holds what an
  older version queued, handed over once at start (``take_legacy_results``).
* (CONTRACT 1.1) ``fetch`` returns only rows whose commit a completed sync
  covers, and ``new_data`` is set after a sync, not after a commit: a power
  cut can take back only readings nobody has seen, so a seq is never given to
  two different readings. ``open`` syncs once, for rows a killed process
  committed but never synced.
* A full disk fails a commit without losing it: its work waits in memory
  (shed by the size cap's rules) and is retried; see ``_hold_while_full``.

Lanes are separate tables keyed by ``seq`` (the rowid), so appends touch the
rightmost pages only and a drained batch is deleted as one range. Rows are
compact (``ts`` in milliseconds, ``data`` as JSON text); the reading's JSON
object is rebuilt around them when a batch is fetched, so fewer bytes reach
the SD card. Rows whose wall clock could not be vouched for also keep their
monotonic stamp and boot, to be corrected once the clock syncs (CONTRACT.md:
``"clock": "unsynced"``).

One worker thread owns the SQLite connection; the event loop never blocks on
it (STYLE.md §5).

Longer than 400 lines because the durability windows, lanes, batching, PUBACK deletes,
the size cap, the disk-full hold and clock correction all act on one SQLite connection
owned by one worker, and keep one invariant together (a seq is spent only on a committed
reading, and sent only once synced); opening and syncing live in gateway/storage/sqlite.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import operator
import secrets
import sqlite3
import string
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from drivers.base import Clock, Priority, Reading, ReadingType
from gateway.outbox import deadletter
from gateway.outbox.wire import reading_body
from gateway.runtime.clock import ClockSync
from gateway.storage.sqlite import (
    Schema,
    UnusableDatabaseError,
    is_disk_full,
    open_database,
    rollback,
    sync_database,
)
from gateway.timefmt import TimestampFormatter, rfc3339_ms

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 2
DB_NAME = "outbox.sqlite3"
PAGE_SIZE = 512
# SQLite checkpoints the WAL into the file every 1000 pages by default: with
# 512-byte pages that is twice as often per byte as with 1 KiB, and each
# checkpoint rewrites (and syncs) every page touched since. 2000 keeps the WAL
# at about 1 MB, as before (bench_sd_card: 2.62x -> 2.56x, fewer syncs).
WAL_AUTOCHECKPOINT_PAGES = 2000
# Deletes after PUBACK wait for the sync interval (or this many rows): a lost
# delete only means a duplicate the platform drops by id, and coarse deletes
# free whole pages at once instead of rewriting the same pages every commit.
ACK_BATCH_ROWS = 10_000
SHED_TARGET_FRACTION = 0.9  # shed down to 90 % of the cap, so shedding is not per-commit
# Disk full: each retry sheds a tenth of the routine backlog (at least this
# many rows) from the database, and at most this many readings wait in memory
# (about 5 MB); older routine ones beyond it are shed.
SHED_ON_FULL_MIN_ROWS = 1_000
MAX_HELD_WHILE_FULL = 10_000
FULL_RETRY_S = 1.0  # a failing commit is retried this often, not in a tight loop
STATE_PREFIX = "device-state:"  # drivers' keys in the meta table (DeviceStateStore)
_EPOCH_ALPHABET = string.ascii_lowercase + string.digits
# One encoder, built once: json.dumps() with keyword arguments builds a new
# encoder per call, which is a third of the ingest cost at 100k readings/s.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# Per-device figures are counted per commit with C-level helpers (Counter.update
# over attrgetter), not per put(): put() is the 100k readings/s hot path.
_DEVICE_AND_TYPE = operator.attrgetter("device", "type")
_DEVICE = operator.attrgetter("device")
_WALL_TS = operator.attrgetter("wall_ts")


class Lane(StrEnum):
    """Lanes, in drain order: results and alarms before routine.

    ``RESULT`` is drained from the command store (``gateway.commands.results``);
    the outbox keeps its name for the dead-letter table.
    """

    RESULT = "result"
    ALARM = "alarm"
    ROUTINE = "routine"


# A fetch cursor below every row of every lane (SQLite's smallest integer):
# where each drain session starts. The outbox's seqs are positive; the result
# lane's messages held in memory have negative ids (``gateway.commands.results``).
BEFORE_ANY_ROW = -(1 << 63)


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows fetched for one MQTT message. ``first``/``last`` bound the rows to delete."""

    lane: Lane
    first: int
    last: int
    bodies: list[str]
    # Result lane only: where the message goes (None: the results topic).
    topic: str | None = None
    correlation: bytes | None = None

    @property
    def count(self) -> int:
        return len(self.bodies)


@dataclass(slots=True)
class OutboxStats:
    epoch: str = ""
    last_seq: int = 0
    backlog: dict[Lane, int] = field(default_factory=lambda: dict.fromkeys(Lane, 0))
    accepted: int = 0
    committed: int = 0
    fetched_bytes: int = 0  # encoded size of the readings handed to the uplink
    dropped: int = 0
    dead_letter: int = 0  # messages set aside (kept in the dead-letter table)
    syncs: int = 0
    last_ack_at: float | None = None
    # Committed readings by (device, type), and each device's latest reading
    # (wall clock, as stamped by the driver): for metrics and `status --live`.
    by_device_type: Counter[tuple[str, ReadingType]] = field(default_factory=Counter)
    last_reading_wall: dict[str, float] = field(default_factory=dict)


def _new_epoch() -> str:
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(8))


def _migrate_to_1(db: sqlite3.Connection) -> None:
    # One statement per execute: executescript() would commit the migration's
    # transaction half-way.
    for statement in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        "CREATE TABLE boots (id INTEGER PRIMARY KEY, boot_id TEXT NOT NULL UNIQUE)",
        # Compact rows (ts in ms; the id, priority and JSON framing are rebuilt
        # when sent): fewer bytes written per reading. mono/boot are set only
        # while the row's ts is unsynced.
        "CREATE TABLE alarm (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, device TEXT NOT NULL,"
        " type TEXT NOT NULL, data TEXT NOT NULL, mono REAL, boot INTEGER)",
        "CREATE TABLE routine (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, device TEXT NOT NULL,"
        " type TEXT NOT NULL, data TEXT NOT NULL, sheddable INTEGER NOT NULL, mono REAL,"
        " boot INTEGER)",
        "CREATE TABLE result (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT,"
        " correlation BLOB, body TEXT NOT NULL)",
    ):
        db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('epoch', ?)", (_new_epoch(),))
    db.execute("INSERT INTO meta VALUES ('last_seq', '0')")


# The columns each table must have at SCHEMA_VERSION: a file whose version
# number matches but whose tables do not (a foreign or hand-edited database)
# is unusable, and is moved aside like a corrupt one.
_EXPECTED_COLUMNS = {
    "meta": ["key", "value"],
    "alarm": ["seq", "ts", "device", "type", "data", "mono", "boot"],
    "routine": ["seq", "ts", "device", "type", "data", "sheddable", "mono", "boot"],
    "result": ["id", "topic", "correlation", "body"],
    deadletter.TABLE: deadletter.COLUMNS,
}


def _check_shape(db: sqlite3.Connection) -> None:
    for table, expected in _EXPECTED_COLUMNS.items():
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if columns != expected:
            raise UnusableDatabaseError(f"table {table} has columns {columns}, expected {expected}")


# Small pages: a group commit of a few readings rewrites whole pages in the
# WAL (the rightmost leaves, the table's root, the freelist trunk and page 1),
# so smaller pages write less. At 50 readings/s (bench_sd_card) 512-byte pages
# write 2.5-2.7x the readings' encoded bytes, 1 KiB pages 3.5x, 4 KiB 5.6x.
# Applies to new files only: an existing outbox keeps its page size.
SCHEMA = Schema(
    name="outbox",
    version=SCHEMA_VERSION,
    migrations=(_migrate_to_1, deadletter.create_table),
    check_shape=_check_shape,
    page_size=PAGE_SIZE,
)


class Outbox:
    """Durable, prioritised buffer of readings.

    ``put`` is called from the event loop and never blocks;
    ``run`` is the owner task that commits and syncs.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        site: str,
        gateway_id: str,
        clock: Clock,
        clock_sync: ClockSync,
        boot_id: str,
        commit_interval_s: float = 0.2,
        sync_interval_s: float = 1.0,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.path = data_dir / DB_NAME
        self._site = site
        self._gateway_id = gateway_id
        self._clock = clock
        self._clock_sync = clock_sync
        self._boot_id = boot_id
        self._commit_interval_s = commit_interval_s
        self._sync_interval_s = sync_interval_s
        self._max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._boot_key = 0
        self._synced_since_mono: float | None = None
        self._offset = 0.0  # wall - monotonic, once the clock is synchronised
        self._has_unsynced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._id_prefix = ""
        self._format_ts = TimestampFormatter()
        self._device_json: dict[str, str] = {}
        # Work gathered on the loop, handed to the worker at each commit.
        self._pending: list[Reading] = []
        # Only the bounds of acknowledged batches: never their bodies.
        self._pending_acks: list[tuple[Lane, int, int]] = []
        self._pending_ack_rows = 0
        self._last_ack_commit_mono = clock.monotonic()
        # Drivers' durable state (``DeviceStateStore``), written in the same
        # transaction as the readings put before it.
        self._pending_state: list[tuple[str, str, asyncio.Future[None]]] = []
        self._awaiting_sync: list[asyncio.Future[None]] = []  # committed, not yet synced
        self._wake = asyncio.Event()
        self._fresh = asyncio.Event()  # something to commit arrived
        self._urgent = asyncio.Event()  # alarms: commit and sync at once
        self._acks_full = asyncio.Event()  # enough deletes waiting: commit now
        self._unsynced = asyncio.Event()
        self._last_sync_mono = float("-inf")
        # CONTRACT 1.1: only rows whose commit is synced may be fetched. The
        # bound is the last seq covered by a completed sync.
        self._committed_seq = 0
        self._durable_seq = 0
        # Disk full: commits fail and what they held waits in memory (see commit).
        self.disk_full = False
        self._shed_while_full = 0  # readings dropped in memory: they never got a seq
        self.new_data = asyncio.Event()
        self.stats = OutboxStats()
        self.moved_aside: str | None = None
        # The latest trusted wall time (gateway.runtime.clock.TrustedClock):
        # read at open, written with the next commit when it is given a new one.
        self.trusted_wall: float | None = None
        self._pending_trusted: float | None = None

    # ----------------------------------------------------------------- life

    async def open(self) -> None:
        """Open the database (creating, migrating or moving aside as needed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()  # the worker signals events on it
        await self._call(self._open_sync)

    def _open_sync(self) -> None:
        opened = open_database(self.path, SCHEMA, check_same_thread=False)
        db = self._db = opened.conn
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES:d}")
        self.moved_aside = None if opened.moved_aside is None else str(opened.moved_aside)
        row = db.execute("SELECT id FROM boots WHERE boot_id = ?", (self._boot_id,)).fetchone()
        if row is None:
            cursor = db.execute("INSERT INTO boots (boot_id) VALUES (?)", (self._boot_id,))
            self._boot_key = int(cursor.lastrowid or 0)
        else:
            self._boot_key = int(row[0])
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self.stats.epoch = meta["epoch"]
        self.stats.last_seq = read_last_seq(db)
        if "last_ack_at" in meta:
            self.stats.last_ack_at = float(meta["last_ack_at"])
        if "trusted_wall" in meta:
            self.trusted_wall = float(meta["trusted_wall"])
        for lane in (Lane.ALARM, Lane.ROUTINE):
            self.stats.backlog[lane] = int(db.execute(f"SELECT count(*) FROM {lane}").fetchone()[0])
        self.stats.dead_letter = deadletter.count(db)
        self._id_prefix = f"{self._gateway_id}:{self.stats.epoch}:"
        # What an earlier process committed may still be only in the page
        # cache (it was killed before its sync): sync before any of it is sent.
        self._committed_seq = self.stats.last_seq
        self._sync_sync()

    async def take_legacy_results(self) -> list[tuple[str | None, bytes | None, str]]:
        """(topic, correlation, body) of each result an older version queued here."""
        return await self._call(self._legacy_sync)

    def _legacy_sync(self) -> list[tuple[str | None, bytes | None, str]]:
        rows = self._conn().execute("SELECT topic, correlation, body FROM result ORDER BY id")
        return [(topic, corr, body) for topic, corr, body in rows.fetchall()]

    async def drop_legacy_results(self) -> None:
        """Delete the legacy results once the command store holds them durably."""
        await self._call(self._conn().execute, "DELETE FROM result")

    async def close(self) -> None:
        """Commit what is pending, sync, and close the database."""
        if self._db is not None:
            await self.flush()
            await self._call(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        # Shield: once submitted, the worker finishes the transaction even if
        # the caller is cancelled, so the database never sees half a commit.
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        return await asyncio.shield(future)

    # ------------------------------------------------------------ producers

    def put(self, reading: Reading) -> None:
        """Accept a reading; it is durable after the next commit (alarms: at once)."""
        self._pending.append(reading)
        self.stats.accepted += 1
        if reading.priority is Priority.ALARM:
            self._urgent.set()
        self._wake.set()
        self._fresh.set()

    def record_trusted_time(self, wall_s: float) -> None:
        """Keep ``wall_s`` as the latest trusted time, written with the next commit.

        ``TrustedClock`` calls this at most once a minute and at shutdown.
        """
        self._pending_trusted = wall_s
        self._wake.set()

    async def put_state(self, key: str, value: str) -> None:
        """Store ``key`` in the same commit as every reading put before; return once synced.

        A driver's bookmark (the last device event it turned into readings)
        then lives in the very transaction that made those readings durable,
        so a crash can neither lose readings behind a moved bookmark nor
        repeat readings behind a stale one.
        """
        await self.stage_state(key, value, urgent=True)

    def stage_state(self, key: str, value: str, *, urgent: bool = False) -> asyncio.Future[None]:
        """``put_state`` queued now, in order with the readings; the future says when synced.

        Not urgent by default: it rides with the next group commit and the
        next WAL sync, like the routine readings it follows (no sync per
        device event: the SD card).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_state.append((STATE_PREFIX + key, value, future))
        if urgent:
            self._urgent.set()
        self._wake.set()
        self._fresh.set()
        return future

    async def get_state(self, key: str) -> str | None:
        """The value ``put_state`` last made durable for ``key``, or None."""
        return await self._call(self._get_state_sync, STATE_PREFIX + key)

    def _get_state_sync(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def set_aside(self, batch: Batch, reason: str) -> None:
        """Move a batch the broker refused (or that cannot be sent) to the dead-letter table."""
        await self._call(self._set_aside_sync, batch, reason)

    def _set_aside_sync(self, batch: Batch, reason: str) -> None:
        db = self._conn()
        joined = ",".join(batch.bodies)
        body = batch.bodies[0] if batch.lane is Lane.RESULT else f"[{joined}]"
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = deadletter.set_aside(
                db,
                lane=batch.lane.value,
                key=None if batch.lane is Lane.RESULT else "seq",
                first=batch.first,
                last=batch.last,
                topic=batch.topic,
                correlation=batch.correlation,
                body=body,
                rows=batch.count,
                reason=reason,
                at=self._clock.wall(),
            )
            if batch.lane is not Lane.RESULT:
                self._persist_last_seq(db)  # rows left: keep the highest seq given out
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise
        self.stats.backlog[batch.lane] -= removed
        self.stats.dead_letter += 1
        self._mark_unsynced()

    def ack(self, batch: Batch) -> None:
        """The broker PUBACKed ``batch``: delete its rows with a coming commit."""
        self._pending_acks.append((batch.lane, batch.first, batch.last))
        self._pending_ack_rows += batch.count
        if self._pending_ack_rows >= ACK_BATCH_ROWS:
            self._acks_full.set()
        self._wake.set()

    def _acks_due_in(self) -> float:
        if self._pending_ack_rows >= ACK_BATCH_ROWS:
            return 0.0
        due = self._last_ack_commit_mono + self._sync_interval_s
        return max(0.0, due - self._clock.monotonic())

    # ------------------------------------------------------------ the owner

    async def run(self) -> None:
        """Commit and sync until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._commit_loop(), name="outbox-commit")
            group.create_task(self._sync_loop(), name="outbox-sync")

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                # Group commit: gather readings for one interval, unless an alarm
                # comes; only acks waiting: until their deletes are due.
                gathering = bool(self._pending or self._pending_state)
                if gathering:
                    wait = self._commit_interval_s
                else:
                    wait = self._acks_due_in()
                    self._fresh.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        if gathering:
                            await first_of(self._urgent, self._acks_full)
                        else:
                            await first_of(self._urgent, self._acks_full, self._fresh)
                if not gathering and self._fresh.is_set() and not self._urgent.is_set():
                    # A reading came while only deletes were waiting: it waits one
                    # commit interval, not until the deletes are due (up to a sync
                    # interval later).
                    continue
            if self.disk_full:
                await asyncio.sleep(FULL_RETRY_S)
            await self.commit()

    async def _sync_loop(self) -> None:
        while True:
            await self._unsynced.wait()
            due = self.sync_due_in()
            if due > 0:
                await asyncio.sleep(due)
            await self._sync_and_settle()

    async def _sync_and_settle(self) -> None:
        # Futures of state committed before this sync was submitted are durable after it.
        waiting, self._awaiting_sync = self._awaiting_sync, []
        try:
            await self._call(self._sync_sync)
        except BaseException as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            raise
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def sync_due_in(self) -> float:
        """Seconds until the next routine sync may run (0: now)."""
        return max(0.0, self._last_sync_mono + self._sync_interval_s - self._clock.monotonic())

    async def commit(self, *, include_acks: bool = False) -> None:
        """Commit what is gathered (and sync at once if it holds alarms).

        Deletes of acknowledged rows ride along once they are due, or when
        ``include_acks`` asks for them now.
        """
        readings, self._pending = self._pending, []
        state, self._pending_state = self._pending_state, []
        acks: list[tuple[Lane, int, int]] = []
        if self._pending_acks and (include_acks or self._acks_due_in() <= 0):
            acks, self._pending_acks = self._pending_acks, []
            self._pending_ack_rows = 0
            self._acks_full.clear()
            self._last_ack_commit_mono = self._clock.monotonic()
        urgent = self._urgent.is_set()
        self._urgent.clear()
        if self._pending_acks:
            self._wake.set()  # deletes still waiting: keep the loop timing them
        else:
            self._wake.clear()
        trusted, self._pending_trusted = self._pending_trusted, None
        if not (readings or acks or state or trusted is not None):
            return
        rows = [(key, value) for key, value, _ in state]
        try:
            await self._call(
                functools.partial(self._commit_sync, readings, acks, urgent, trusted, state=rows)
            )
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                _fail(state, exc)
                raise
            self._hold_while_full(readings, acks)
            if self._pending_trusted is None:
                self._pending_trusted = trusted
            # Retried with the readings it follows, in the same later commit.
            self._pending_state[:0] = state
            return
        except BaseException as exc:
            _fail(state, exc)
            raise
        if urgent:  # synced inside the commit
            for _, _, future in state:
                if not future.done():
                    future.set_result(None)
        elif state:
            self._awaiting_sync.extend(future for _, _, future in state)
            self._unsynced.set()  # a sync pass that starts after this point settles them
        if self.disk_full:
            self._resume_after_full()

    async def flush(self) -> None:
        """Commit what is pending, acks included, and sync now (shutdown)."""
        await self.commit(include_acks=True)
        await self.sync()

    async def sync(self) -> None:
        """Sync now if anything committed is not yet durable (and so not yet sendable)."""
        if (
            self._unsynced.is_set()
            or self._durable_seq < self._committed_seq
            or self._awaiting_sync
        ):
            await self._sync_and_settle()

    # ------------------------------------------------------------ disk full

    def _hold_while_full(
        self,
        readings: list[Reading],
        acks: list[tuple[Lane, int, int]],
    ) -> None:
        """A commit failed for a full disk: keep its work, ahead of what came since.

        SQLite rolled the transaction back; nothing got a seq. Routine
        readings beyond ``MAX_HELD_WHILE_FULL`` are shed oldest first (the size
        cap's rule: never alarms, never audit records) and counted for the
        ``gateway.dropped`` alarm written once space returns.
        """
        if not self.disk_full:
            self.disk_full = True
            _LOGGER.error(
                "outbox: disk full, readings wait in memory and the oldest routine ones are "
                "shed; doors and devices keep working: path=%s",
                self.path,
            )
        self._pending[:0] = readings
        self._pending_acks[:0] = acks
        self._pending_ack_rows = sum(last - first + 1 for _lane, first, last in self._pending_acks)
        excess = len(self._pending) - MAX_HELD_WHILE_FULL
        if excess > 0:
            kept: list[Reading] = []
            for reading in self._pending:
                if excess > 0 and reading.sheddable and reading.priority is Priority.ROUTINE:
                    excess -= 1
                    self._shed_while_full += 1
                    self.stats.dropped += 1
                    continue
                kept.append(reading)
            self._pending = kept
        self._urgent.set()  # retry with the next round: the loop paces it
        self._wake.set()

    def _resume_after_full(self) -> None:
        self.disk_full = False
        shed, self._shed_while_full = self._shed_while_full, 0
        _LOGGER.warning("outbox: disk space is back, writing resumed: shed_in_memory=%d", shed)
        if shed:
            # These never got a seq: the commit gives them a range (_insert_readings).
            self.put(
                Reading(
                    device=self._gateway_id,
                    type=ReadingType.GATEWAY_DROPPED,
                    data={"from_seq": None, "to_seq": None, "count": shed, "reason": "disk_full"},
                    priority=Priority.ALARM,
                    wall_ts=self._clock.wall(),
                    mono_ts=self._clock.monotonic(),
                )
            )

    # -------------------------------------------------------- worker thread

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    def _commit_sync(
        self,
        readings: list[Reading],
        acks: list[tuple[Lane, int, int]],
        urgent: bool,
        trusted: float | None = None,
        *,
        state: list[tuple[str, str]] | None = None,
    ) -> bool:
        db = self._conn()
        stats = self.stats
        synced = self._observe_clock()
        # What the transaction changes in memory, restored if it fails (a full
        # disk): a seq must not be spent on a reading that was not committed.
        before = (stats.last_seq, dict(stats.backlog), stats.dropped, self._has_unsynced)
        try:
            db.execute("BEGIN IMMEDIATE")
            if synced and self._synced_since_mono is not None and self._has_unsynced:
                self._correct_unsynced(db)
            if readings:
                self._insert_readings(db, readings, synced)
            if state:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", state)
            acked = self._delete_acked(db, acks)
            dropped = self._shed_if_over_cap(db, synced)
            if trusted is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('trusted_wall', ?)", (repr(trusted),)
                )
            db.execute("COMMIT")
        except BaseException as exc:
            rollback(db)
            stats.last_seq, stats.backlog, stats.dropped, self._has_unsynced = before
            if is_disk_full(exc):
                self._make_room_sync(db, synced)
            raise
        self._committed_seq = stats.last_seq
        stats.committed += len(readings)
        stats.by_device_type.update(map(_DEVICE_AND_TYPE, readings))
        stats.last_reading_wall.update(
            zip(map(_DEVICE, readings), map(_WALL_TS, readings), strict=True)
        )
        if acked:
            stats.last_ack_at = self._clock.wall()
        if trusted is not None:
            self.trusted_wall = trusted
        if dropped:
            _LOGGER.warning("outbox over its size cap: dropped=%d oldest routine readings", dropped)
        if urgent or dropped:  # the gateway.dropped notice is an alarm too
            self._sync_sync()
        else:
            self._mark_unsynced()
        return bool(readings or dropped)

    def _make_room_sync(self, db: sqlite3.Connection, synced: bool) -> None:
        """The disk is full: give back the WAL's space and shed the oldest routine rows.

        Freed pages stay in the file for the next inserts. Either step may fail
        on a disk that is full to the last block; the readings then wait (and
        are shed) in memory until space returns.
        """
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            want = max(SHED_ON_FULL_MIN_ROWS, self.stats.backlog[Lane.ROUTINE] // 10)
            before = (self.stats.last_seq, dict(self.stats.backlog), self.stats.dropped)
            db.execute("BEGIN IMMEDIATE")
            try:
                shed = self._shed(db, synced, want, "disk_full")
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                self.stats.last_seq, self.stats.backlog, self.stats.dropped = before
                raise
        except sqlite3.OperationalError as exc:
            _LOGGER.debug("outbox: no room made on a full disk: error=%s", exc)
            return
        if shed:
            self._committed_seq = self.stats.last_seq
            _LOGGER.warning("outbox: disk full, dropped=%d oldest routine readings", shed)
            self._sync_sync()

    def _observe_clock(self) -> bool:
        synced = self._clock_sync.is_synced()
        if synced and self._synced_since_mono is None:
            self._synced_since_mono = self._clock.monotonic()
            self._offset = self._clock.wall() - self._synced_since_mono
            self._has_unsynced = True  # rows of this boot from before may need correcting
            _LOGGER.info("clock synchronised; correcting earlier timestamps of this boot")
        elif not synced:
            self._synced_since_mono = None
        return synced

    def _insert_readings(
        self, db: sqlite3.Connection, readings: list[Reading], synced: bool
    ) -> None:
        seq = self.stats.last_seq
        since = self._synced_since_mono
        offset = self._offset
        boot_key = self._boot_key
        alarms: list[tuple[int, int, str, str, str, float | None, int | None]] = []
        routine: list[tuple[int, int, str, str, str, int, float | None, int | None]] = []
        for reading in readings:
            data = reading.data
            if reading.type is ReadingType.GATEWAY_DROPPED and data.get("from_seq", 0) is None:
                # Shed in memory on a full disk before they got a seq: spend theirs
                # now, in this commit, so the gap is there and this notice explains it.
                data = {**data, "from_seq": seq + 1, "to_seq": seq + data["count"]}
                seq += data["count"]
            seq += 1
            mono: float | None = None
            boot: int | None = None
            if not synced:
                wall = reading.wall_ts
                mono, boot = reading.mono_ts, boot_key
            elif since is None or reading.mono_ts >= since:
                wall = reading.wall_ts
            else:
                # Taken before we saw the clock sync: its wall stamp was not vouched for.
                wall = reading.mono_ts + offset
            row = (
                seq,
                round(wall * 1000),
                reading.device,
                reading.type.value,
                _encode_json(data),
            )
            if reading.priority is Priority.ALARM:
                alarms.append((*row, mono, boot))
            else:
                routine.append((*row, int(reading.sheddable), mono, boot))
        if alarms:
            db.executemany("INSERT INTO alarm VALUES (?, ?, ?, ?, ?, ?, ?)", alarms)
        if routine:
            db.executemany("INSERT INTO routine VALUES (?, ?, ?, ?, ?, ?, ?, ?)", routine)
        stats = self.stats
        stats.last_seq = seq
        stats.backlog[Lane.ALARM] += len(alarms)
        stats.backlog[Lane.ROUTINE] += len(routine)

    def _correct_unsynced(self, db: sqlite3.Connection) -> None:
        """Rewrite the ``ts`` of this boot's unsynced rows from their monotonic stamps."""
        corrected = 0
        for table in (Lane.ALARM, Lane.ROUTINE):
            cursor = db.execute(
                f"UPDATE {table} SET ts = CAST(round((mono + ?) * 1000) AS INTEGER),"
                " mono = NULL, boot = NULL WHERE boot = ?",
                (self._offset, self._boot_key),
            )
            corrected += cursor.rowcount
        self._has_unsynced = False
        if corrected:
            _LOGGER.info("clock: corrected ts of %d readings taken before the sync", corrected)

    def _delete_acked(self, db: sqlite3.Connection, acks: list[tuple[Lane, int, int]]) -> bool:
        for lane, first, last in acks:
            key = "id" if lane is Lane.RESULT else "seq"
            cursor = db.execute(f"DELETE FROM {lane} WHERE {key} BETWEEN ? AND ?", (first, last))
            self.stats.backlog[lane] -= cursor.rowcount
        if acks:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_ack_at', ?)", (repr(self._clock.wall()),)
            )
            self._persist_last_seq(db)
        return bool(acks)

    def _persist_last_seq(self, db: sqlite3.Connection) -> None:
        # Needed only when rows leave: until then the highest seq is in a table
        # (read_last_seq), which spares the meta page a write on every commit.
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(self.stats.last_seq),))

    def _used_bytes(self, db: sqlite3.Connection) -> int:
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    def _shed_if_over_cap(self, db: sqlite3.Connection, synced: bool) -> int:
        used = self._used_bytes(db)
        if used <= self._max_bytes:
            return 0
        rows = max(1, sum(self.stats.backlog.values()))
        excess = used - int(self._max_bytes * SHED_TARGET_FRACTION)
        want = max(1, -(-excess * rows // used))  # ceil: rows to free the excess
        return self._shed(db, synced, want, "size_cap")

    def _shed(self, db: sqlite3.Connection, synced: bool, want: int, reason: str) -> int:
        """Delete the ``want`` oldest sheddable routine rows and explain the gap."""
        victims = db.execute(
            "SELECT min(seq), max(seq), count(*) FROM "
            "(SELECT seq FROM routine WHERE sheddable = 1 ORDER BY seq LIMIT ?)",
            (want,),
        ).fetchone()
        first, last, count = victims
        if not count:
            _LOGGER.error("outbox must shed but nothing is sheddable: reason=%s", reason)
            return 0
        db.execute("DELETE FROM routine WHERE sheddable = 1 AND seq BETWEEN ? AND ?", (first, last))
        self.stats.backlog[Lane.ROUTINE] -= count
        self.stats.dropped += count
        notice = Reading(
            device=self._gateway_id,
            type=ReadingType.GATEWAY_DROPPED,
            data={"from_seq": first, "to_seq": last, "count": count, "reason": reason},
            priority=Priority.ALARM,
            wall_ts=self._clock.wall(),
            mono_ts=self._clock.monotonic(),
        )
        self._insert_readings(db, [notice], synced)
        return int(count)

    def _mark_unsynced(self) -> None:
        # Called in the worker; the event lives on the loop.
        self._loop_call(self._unsynced.set)

    def _loop_call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(fn)

    def _sync_sync(self) -> None:
        """fdatasync the WAL: everything committed so far survives a power cut.

        Commits run on this same thread, so what is committed now is exactly
        what this sync covers; only then may the uplink fetch it (CONTRACT 1.1).
        """
        seq = self._committed_seq
        sync_database(self.path)
        self.stats.syncs += 1
        self._last_sync_mono = self._clock.monotonic()
        self._loop_call(self._unsynced.clear)
        if seq != self._durable_seq:
            self._durable_seq = seq
            self._loop_call(self.new_data.set)

    # ---------------------------------------------------------------- reads

    async def fetch(self, lane: Lane, after: int, max_count: int, max_bytes: int) -> Batch | None:
        """The next rows of ``lane`` after ``after``, bounded by count and bytes."""
        return await self._call(self._fetch_sync, lane, after, max_count, max_bytes)

    def _fetch_sync(self, lane: Lane, after: int, max_count: int, max_bytes: int) -> Batch | None:
        db = self._conn()
        if lane is Lane.RESULT:
            raise ValueError("results are drained from the command store")
        rows = db.execute(
            f"SELECT seq, ts, device, type, data, boot FROM {lane} WHERE seq > ? AND seq <= ?"
            " ORDER BY seq LIMIT ?",
            (after, self._durable_seq, max_count),
        ).fetchall()
        if not rows:
            return None
        bodies: list[str] = []
        size = 0
        last = rows[0][0]
        prefix = self._id_prefix
        fmt = self._format_ts
        devices = self._device_json
        priority = "alarm" if lane is Lane.ALARM else "routine"
        for seq, ts, device, type_, data, boot in rows:
            device_json = devices.get(device)
            if device_json is None:
                device_json = devices.setdefault(device, json.dumps(device, ensure_ascii=False))
            body = reading_body(
                id_prefix=prefix,
                seq=seq,
                ts=fmt(ts),
                device_json=device_json,
                type_=type_,
                priority=priority,
                data_json=data,
                unsynced=boot is not None,
            )
            size += len(body) + 1
            if bodies and size > max_bytes:
                break
            bodies.append(body)
            last = seq
        self.stats.fetched_bytes += size
        return Batch(lane, rows[0][0], last, bodies)

    async def oldest_unsent_ts(self) -> str | None:
        """``ts`` of the oldest reading still waiting, for the status message."""
        return await self._call(self._oldest_sync)

    def _oldest_sync(self) -> str | None:
        return oldest_unsent(self._conn())


def _fail(state: list[tuple[str, str, asyncio.Future[None]]], exc: BaseException) -> None:
    for _, _, future in state:
        if not future.done():
            future.set_exception(exc)


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def read_last_seq(db: sqlite3.Connection) -> int:
    """The last seq given out: the meta record, or a higher seq still in a table."""
    stored = int(db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
    for table in (Lane.ALARM, Lane.ROUTINE):
        top = db.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
        if top is not None:
            stored = max(stored, int(top))
    return stored


def oldest_unsent(db: sqlite3.Connection) -> str | None:
    """The smallest ``ts`` among the first reading of each lane."""
    stamps: list[int] = []
    for table in (Lane.ALARM, Lane.ROUTINE):
        row = db.execute(f"SELECT ts FROM {table} ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            stamps.append(int(row[0]))
    return rfc3339_ms(min(stamps)) if stamps else None


@contextlib.contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for ``status`` while the daemon writes."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()
