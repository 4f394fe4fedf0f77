"""Command results waiting for the broker, kept in the command store (CONTRACT.md, "Commands").

A result is written in the very transaction that records the fact it reports
(``CommandStore.finish`` marks a command finished, ``CommandStore.record``
audits a refusal): the outcome and its answer are one durable fact. Before,
the finished mark was committed in ``commands.sqlite3`` and the result then
queued in the outbox, another file; a SIGKILL or power cut between the two
commits lost the answer for good (a replay is rightly refused as already
executed).

The uplink sends the ``result`` table as the outbox's first lane (its ``Lane.RESULT``,
ahead of alarms): ``fetch`` yields only rows a completed sync covers (durable
before sent, CONTRACT 1.1), one row per MQTT message (the results topic, or a
response topic with its correlation data), and a row leaves only after the
broker's PUBACK (``ack``). Rows left at a restart are sent again, like readings.

The table lives on the command store's connection, owned by the event loop's
thread (STYLE.md §4): every call here is one short statement and none syncs;
the command processor syncs on its worker thread and then calls
``durable_through``.

When the store cannot write a result (``sqlite3.Error``: a full disk, an I/O
error, a corrupt file), the processor ``hold``s it here in memory instead: the
contract promises every command a result, and an answer that cannot be durable
is still better sent than lost. Held messages are sent before the table's rows
and never touch the database (it may be what is failing); they survive a lost
connection, not a restart, and at most ``MAX_HELD_MESSAGES`` wait (the oldest
dropped beyond, logged and counted). Their ids sit far below every table id,
from ``HELD_FIRST_ID`` up, so the drain's cursor, starting at
``BEFORE_ANY_ROW``, meets them first.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from dataclasses import dataclass

from gateway.outbox.store import BEFORE_ANY_ROW, Batch, Lane

_LOGGER = logging.getLogger(__name__)

TABLE = "result"
CREATE_TABLE = (
    "CREATE TABLE result (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT,"
    " correlation BLOB, body TEXT NOT NULL)"
)

# Ids of held messages count up from here: far above the drain's first cursor
# and below the table's (positive) ids, which 2**62 of them never reach.
HELD_FIRST_ID = BEFORE_ANY_ROW // 2
# Held results waiting for the broker, at most (messages, two per command with
# a response topic): a broken store with the link down must not grow memory
# without bound. Beyond it the oldest is dropped: its command is long past.
MAX_HELD_MESSAGES = 256


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """One MQTT message of a result: ``topic`` None is ``{root}/commands/results``."""

    body: str
    topic: str | None = None
    correlation: bytes | None = None


def messages(
    body: str, response_topic: str | None, correlation: bytes | None
) -> list[ResultMessage]:
    """The messages of one result: the results topic, and the honoured response topic."""
    out = [ResultMessage(body)]
    if response_topic:
        out.append(ResultMessage(body, response_topic, correlation))
    return out


class ResultQueue:
    """The ``result`` table of the command store, as a lane the uplink drains,
    with the results the store could not write held in memory ahead of it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._committed = self._max_id()
        # Rows a killed process committed may not be synced yet: the store's
        # open syncs once and then calls durable_through(committed()).
        self._durable = 0
        self.new_data = asyncio.Event()
        """Set when more rows became durable or were held (the uplink waits on it)."""
        # Results the store could not write, sent from memory: (id, message).
        self._held: deque[tuple[int, ResultMessage]] = deque()
        self._next_held_id = HELD_FIRST_ID
        # The highest held id fetch handed out: a message held later, mid-session
        # (its id below the drain's cursor), is still fetched once.
        self._held_fetched = HELD_FIRST_ID - 1
        # committed() before the open transaction's first insert: where
        # rolled_back puts it back.
        self._uncommitted_from: int | None = None
        self.held_dropped = 0
        self._table_backlog = 0  # the table's row count when it was last read
        """Held messages dropped for the bound: results the platform never got."""

    def insert(self, rows: list[ResultMessage]) -> None:
        """Queue ``rows`` inside the caller's open transaction."""
        if self._uncommitted_from is None:
            self._uncommitted_from = self._committed
        for row in rows:
            cursor = self._conn.execute(
                "INSERT INTO result (topic, correlation, body) VALUES (?, ?, ?)",
                (row.topic, row.correlation, row.body),
            )
            self._committed = max(self._committed, int(cursor.lastrowid or 0))

    def transaction_done(self) -> None:
        """The caller's transaction committed: what ``insert`` counted is there."""
        self._uncommitted_from = None

    def rolled_back(self) -> None:
        """The caller's transaction failed: what ``insert`` counted is not there.

        Without reading the table: the database may be what failed.
        """
        if self._uncommitted_from is not None:
            self._committed = self._uncommitted_from
            self._uncommitted_from = None

    def hold(self, rows: list[ResultMessage]) -> None:
        """Send ``rows`` from memory: the store could not write them (not durable)."""
        for row in rows:
            if len(self._held) >= MAX_HELD_MESSAGES:
                dropped_id, dropped = self._held.popleft()
                self.held_dropped += 1
                _LOGGER.error(
                    "command result dropped: %d results held in memory already "
                    "(the command store is failing and the broker has not taken them) "
                    "held_id=%d topic=%s dropped_total=%d",
                    MAX_HELD_MESSAGES,
                    dropped_id,
                    dropped.topic,
                    self.held_dropped,
                )
            self._held.append((self._next_held_id, row))
            self._next_held_id += 1
        self.new_data.set()

    def committed(self) -> int:
        """The last row id committed so far (take it before a sync starts)."""
        return self._committed

    @property
    def durable(self) -> int:
        """The last row id a completed sync covers: ``fetch`` goes no further."""
        return self._durable

    def durable_through(self, mark: int) -> None:
        """A sync that started after ``committed()`` returned ``mark`` has completed."""
        if mark > self._durable:
            self._durable = mark
            self.new_data.set()

    async def fetch(self, lane: Lane, after: int, max_count: int, max_bytes: int) -> Batch | None:
        """The next message after ``after``, as a one-message batch (the outbox's signature).

        Held messages first, without touching the database; then the next
        durable row of the table.
        """
        del lane, max_count, max_bytes  # one row is one message, whatever its size
        held_after = min(after, self._held_fetched)
        for held_id, held in self._held:
            if held_id > held_after:
                self._held_fetched = max(self._held_fetched, held_id)
                return Batch(
                    Lane.RESULT,
                    held_id,
                    held_id,
                    [held.body],
                    topic=held.topic,
                    correlation=held.correlation,
                )
        row = self._conn.execute(
            "SELECT id, topic, correlation, body FROM result WHERE id > ? AND id <= ?"
            " ORDER BY id LIMIT 1",
            (after, self._durable),
        ).fetchone()
        if row is None:
            return None
        return Batch(Lane.RESULT, row[0], row[0], [row[3]], topic=row[1], correlation=row[2])

    def ack(self, batch: Batch) -> None:
        """The broker PUBACKed (or the outbox set aside) ``batch``: delete its row.

        Not synced: a delete lost to a power cut sends the result again, which
        the platform drops by its ``id``. A held message just leaves memory.
        """
        if batch.first < 0:  # held: table ids are positive
            self._held = deque(m for m in self._held if not batch.first <= m[0] <= batch.last)
            return
        self._conn.execute("DELETE FROM result WHERE id BETWEEN ? AND ?", (batch.first, batch.last))

    @property
    def backlog(self) -> int:
        """Result messages not yet acknowledged by the broker, held ones included.

        While the store fails, the table's last count stands in for it: a
        metrics scrape must not fail with the store it reports on (the
        failure itself is logged where a write failed).
        """
        try:
            self._table_backlog = int(
                self._conn.execute("SELECT count(*) FROM result").fetchone()[0]
            )
        except sqlite3.Error:
            _LOGGER.debug("result backlog: table unreadable, its last count used", exc_info=True)
        return len(self._held) + self._table_backlog

    @property
    def held(self) -> int:
        """Result messages waiting in memory (the store could not write them)."""
        return len(self._held)

    def pending(self) -> list[ResultMessage]:
        """Every queued message, durable or not, in sending order: held ones, then
        the table's oldest first (for inspection and tests)."""
        rows = self._conn.execute("SELECT body, topic, correlation FROM result ORDER BY id")
        table = [ResultMessage(body, topic, corr) for body, topic, corr in rows.fetchall()]
        return [message for _, message in self._held] + table

    def _max_id(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM result").fetchone()[0])
