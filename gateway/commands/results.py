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
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass

from gateway.outbox.store import Batch, Lane

TABLE = "result"
CREATE_TABLE = (
    "CREATE TABLE result (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT,"
    " correlation BLOB, body TEXT NOT NULL)"
)


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
    """The ``result`` table of the command store, as a lane the uplink drains."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._committed = self._max_id()
        # Rows a killed process committed may not be synced yet: the store's
        # open syncs once and then calls durable_through(committed()).
        self._durable = 0
        self.new_data = asyncio.Event()
        """Set when more rows became durable (the uplink waits on it)."""

    def insert(self, rows: list[ResultMessage]) -> None:
        """Queue ``rows`` inside the caller's open transaction."""
        for row in rows:
            cursor = self._conn.execute(
                "INSERT INTO result (topic, correlation, body) VALUES (?, ?, ?)",
                (row.topic, row.correlation, row.body),
            )
            self._committed = max(self._committed, int(cursor.lastrowid or 0))

    def rolled_back(self) -> None:
        """The caller's transaction failed: what ``insert`` counted is not there."""
        self._committed = self._max_id()

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
        """The next durable row after ``after``, as a one-message batch (the outbox's signature)."""
        del lane, max_count, max_bytes  # one row is one message, whatever its size
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
        the platform drops by its ``id``.
        """
        self._conn.execute("DELETE FROM result WHERE id BETWEEN ? AND ?", (batch.first, batch.last))

    @property
    def backlog(self) -> int:
        """Result messages not yet acknowledged by the broker."""
        return int(self._conn.execute("SELECT count(*) FROM result").fetchone()[0])

    def pending(self) -> list[ResultMessage]:
        """Every queued message, durable or not, oldest first (for inspection and tests)."""
        rows = self._conn.execute("SELECT body, topic, correlation FROM result ORDER BY id")
        return [ResultMessage(body, topic, corr) for body, topic, corr in rows.fetchall()]

    def _max_id(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM result").fetchone()[0])
