"""``status``: what the local outbox holds, read while the daemon runs.

Reads the outbox database through a read-only connection (WAL lets it read
while the daemon writes) and reports the figures an installer or operator
asks first: epoch, last seq, backlog per priority, the oldest unsent reading's
age, the last successful sync (the last PUBACK-driven delete) and the size;
the command results waiting are counted in the command store, where they live.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.commands.store import DB_FILENAME as COMMANDS_DB
from gateway.outbox import deadletter
from gateway.outbox.store import DB_NAME, Lane, oldest_unsent, open_readonly, read_last_seq
from gateway.timefmt import parse_rfc3339, rfc3339


@dataclass(frozen=True, slots=True)
class OutboxReport:
    database: str
    epoch: str
    last_seq: int
    backlog: dict[str, int]
    oldest_unsent: str | None
    oldest_unsent_age_s: float | None
    last_sync: str | None
    database_bytes: int
    dead_letter: int = 0  # messages the broker refused, set aside (see README)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_text(self) -> str:
        age = "-" if self.oldest_unsent_age_s is None else f"{self.oldest_unsent_age_s:.1f} s"
        size = self.database_bytes / (1024 * 1024)
        return "\n".join(
            [
                f"database       {self.database} ({size:.2f} MiB)",
                f"epoch          {self.epoch}",
                f"last seq       {self.last_seq}",
                f"backlog        {self.backlog['alarm']} alarm, {self.backlog['routine']} routine, "
                f"{self.backlog['result']} command results",
                f"oldest unsent  {self.oldest_unsent or '-'} (age {age})",
                f"last sync      {self.last_sync or 'never'}",
                f"dead letters   {self.dead_letter}"
                + (
                    " (refused by the broker: SELECT * FROM dead_letter)"
                    if self.dead_letter
                    else ""
                ),
            ]
        )


class NoDatabaseError(Exception):
    """No outbox database where the config says it is."""


def read_report(data_dir: Path, *, now: float | None = None) -> OutboxReport:
    """Read the outbox figures.

    Raises:
        NoDatabaseError: the daemon has not created the database yet.
        sqlite3.DatabaseError: the file is not a readable outbox.
    """
    path = data_dir / DB_NAME
    if not path.exists():
        raise NoDatabaseError(f"no outbox database at {path} (has the gateway run yet?)")
    now = time.time() if now is None else now
    with open_readonly(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        backlog = {
            lane.value: int(db.execute(f"SELECT count(*) FROM {lane}").fetchone()[0])
            for lane in (Lane.ALARM, Lane.ROUTINE)
        }
        oldest = oldest_unsent(db)
        last_seq = read_last_seq(db)
        try:
            dead = deadletter.count(db)
        except sqlite3.OperationalError:  # a database the daemon has not migrated yet
            dead = 0
    backlog[Lane.RESULT.value] = _results_waiting(data_dir / COMMANDS_DB)
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    last_ack = meta.get("last_ack_at")
    return OutboxReport(
        database=str(path),
        epoch=meta["epoch"],
        last_seq=last_seq,
        backlog=backlog,
        oldest_unsent=oldest,
        oldest_unsent_age_s=None if oldest is None else max(0.0, now - parse_rfc3339(oldest)),
        last_sync=None if last_ack is None else rfc3339(float(last_ack)),
        database_bytes=size,
        dead_letter=dead,
    )


def _results_waiting(path: Path) -> int:
    """Command results waiting in the command store (they are sent from there)."""
    if not path.exists():
        return 0
    with open_readonly(path) as db:
        try:
            return int(db.execute("SELECT count(*) FROM result").fetchone()[0])
        except sqlite3.OperationalError:  # a store the daemon has not migrated yet
            return 0


__all__ = ["NoDatabaseError", "OutboxReport", "read_report", "sqlite3"]
