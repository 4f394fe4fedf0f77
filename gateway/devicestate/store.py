"""Durable per-device key/value state: ``drivers.base.DeviceStateStore`` in SQLite.

What a driver must remember across a restart lives here: a door's mode (a
remote ``locked`` survives a crash), a controller's event bookmark. One small
SQLite file of its own, ``state.sqlite3`` in ``data_dir``, one row per
``(device, key)``. Writes are rare and each must be on disk before ``put``
returns (a ``done`` result for ``door.set_mode`` promises the mode holds after
a power cut), so the journal is WAL with ``synchronous=FULL``: every commit
syncs the WAL. The calls run on one dedicated worker thread (STYLE.md §5),
never on the event loop, so a slow SD card stalls no device.

A file that is not a database or fails ``quick_check`` is moved aside
(``state.sqlite3.corrupt-<UTC time>``) and logged at ERROR: the devices then
start from their configured defaults, which is what they would do without it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

DB_FILENAME = "state.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """CREATE TABLE IF NOT EXISTS device_state (
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (device, key)
) WITHOUT ROWID"""


class SqliteDeviceStateStore:
    """The gateway's ``DeviceStateStore``; ``open`` it, ``close`` it at shutdown."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor

    @classmethod
    def open(cls, data_dir: Path, *, filename: str = DB_FILENAME) -> SqliteDeviceStateStore:
        """Open (or create) the file, moving a corrupt one aside. Blocking: call at start."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / filename
        try:
            conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(
                f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            _LOGGER.error(
                "device state unreadable, moved aside; devices start from their config: "
                "path=%s aside=%s error=%s",
                path,
                aside,
                exc,
            )
            for suffix in ("", "-wal", "-shm"):
                source = path.with_name(path.name + suffix)
                if source.exists():
                    source.replace(aside.with_name(aside.name + suffix))
            conn = _connect(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device-state")
        return cls(conn, executor)

    async def get(self, device_id: str, key: str) -> str | None:
        """The value last put for ``(device_id, key)``, or None."""
        return await self._run(self._get, device_id, key)

    async def put(self, device_id: str, key: str, value: str) -> None:
        """Store ``value``; returns once the commit is synced to disk."""
        await self._run(self._put, device_id, key, value)

    def close(self) -> None:
        """Wait for the worker, then close the file."""
        self._executor.shutdown(wait=True)
        self._conn.close()

    async def _run(self, fn: Callable[..., _T], *args: str) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _get(self, device_id: str, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM device_state WHERE device = ? AND key = ?", (device_id, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def _put(self, device_id: str, key: str, value: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO device_state (device, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device, key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (device_id, key, value, time.time()),
            )


def _connect(path: Path) -> sqlite3.Connection:
    """Open, check and create the schema; raises sqlite3.DatabaseError for a bad file."""
    # The worker thread is the only user after this; opened here, used there.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        (check,) = conn.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # rare writes, each durable on commit
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this code")
        conn.execute(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn
