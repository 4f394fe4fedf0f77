"""The dead-letter table: messages the broker refused, or that cannot be published at all.

Such a row would otherwise stay first in its lane and be retried first
forever (issue 9): a result for a response topic the broker's ACL forbids, a
single reading larger than the broker accepts. The uplink sets it aside here,
in the outbox database, in the same transaction that deletes it from its lane
(a result's lane is in the command store, which deletes it just after):
it is kept (never deleted by the gateway), counted in ``status`` and the
metrics, and the lane drains on.

One row per refused MQTT message: its lane, topic, correlation data, the
payload that was refused (for readings, the JSON array of the readings, not
the envelope), how many readings it held, why, and when (wall seconds).
"""

from __future__ import annotations

import sqlite3

TABLE = "dead_letter"
COLUMNS = ["id", "lane", "topic", "correlation", "body", "rows", "reason", "at"]


def create_table(db: sqlite3.Connection) -> None:
    db.execute(
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, lane TEXT NOT NULL,"
        " topic TEXT, correlation BLOB, body TEXT NOT NULL, rows INTEGER NOT NULL,"
        " reason TEXT NOT NULL, at REAL NOT NULL)"
    )


def set_aside(
    db: sqlite3.Connection,
    *,
    lane: str,
    key: str | None,
    first: int,
    last: int,
    topic: str | None,
    correlation: bytes | None,
    body: str,
    rows: int,
    reason: str,
    at: float,
) -> int:
    """Keep rows ``first..last`` of ``lane`` in the table as one message.

    With ``key`` (the lane table's key column) they are also deleted from the
    lane, which is a table of this database; ``key`` None only keeps them (a
    result: its lane is in the command store, which deletes it). Runs inside
    the caller's transaction. Returns how many lane rows left.
    """
    db.execute(
        f"INSERT INTO {TABLE} (lane, topic, correlation, body, rows, reason, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (lane, topic, correlation, body, rows, reason, at),
    )
    if key is None:
        return 0
    return int(
        db.execute(f"DELETE FROM {lane} WHERE {key} BETWEEN ? AND ?", (first, last)).rowcount
    )


def count(db: sqlite3.Connection) -> int:
    """Messages set aside so far (and still kept)."""
    return int(db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
