"""The one SQLite helper: open, migrate, check, and move aside only what is really unusable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.storage.sqlite import (
    Schema,
    UnusableDatabaseError,
    is_corruption,
    is_disk_full,
    open_database,
    rollback,
    statements,
)

SCHEMA = Schema(
    name="test",
    version=2,
    migrations=(
        statements("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"),
        statements("CREATE INDEX t_v ON t (v)", "INSERT INTO t (v) VALUES ('migrated')"),
    ),
)


def fill(path: Path, rows: int = 2000) -> None:
    conn = open_database(path, SCHEMA).conn
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"value-{n:06d}" * 4,) for n in range(rows)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_creates_migrates_in_order_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    opened = open_database(path, SCHEMA)
    assert opened.moved_aside is None
    conn = opened.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT v FROM t").fetchall() == [("migrated",)]
    conn.close()
    again = open_database(path, SCHEMA)
    assert again.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1, "migrated once"
    again.conn.close()


def test_a_failing_migration_leaves_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    open_database(path, Schema("test", 1, SCHEMA.migrations[:1])).conn.close()
    broken = Schema("test", 2, (SCHEMA.migrations[0], statements("CREATE TABLE t (x)")))
    with pytest.raises(sqlite3.OperationalError):
        open_database(path, broken)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_a_page_that_fails_quick_check_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    fill(path)
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(3 * page + 100, 3 * page + 400):  # inside a b-tree page
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    opened = open_database(path, SCHEMA)
    assert opened.moved_aside is not None and opened.moved_aside.name.startswith(
        "t.sqlite3.corrupt-"
    )
    assert opened.moved_aside.read_bytes() == bytes(data), "moved, never deleted"
    assert opened.conn.execute("SELECT v FROM t").fetchall() == [("migrated",)]
    opened.conn.close()


def test_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    path.write_bytes(b"not a database at all" * 200)
    opened = open_database(path, SCHEMA)
    assert opened.moved_aside is not None
    opened.conn.close()


def test_a_locked_database_is_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    fill(path, rows=10)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t (v) VALUES ('held')")
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            open_database(path, SCHEMA, busy_timeout_s=0.05)
        assert not is_corruption(caught.value) and not is_disk_full(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert list(tmp_path.glob("*.corrupt-*")) == []
    opened = open_database(path, SCHEMA)
    assert opened.moved_aside is None
    assert opened.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 11
    opened.conn.close()


def test_a_newer_schema_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=3")
    conn.close()
    opened = open_database(path, SCHEMA)
    assert opened.moved_aside is not None
    opened.conn.close()


def test_shape_check_failure_is_moved_aside(tmp_path: Path) -> None:
    def check(conn: sqlite3.Connection) -> None:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'other'").fetchone():
            raise UnusableDatabaseError("no table other")

    path = tmp_path / "t.sqlite3"
    fill(path, rows=1)
    shaped = Schema("test", 2, SCHEMA.migrations, check_shape=check)
    with pytest.raises(UnusableDatabaseError):
        open_database(path, shaped)  # the new file fails too: raised, not looped


def test_rollback_is_quiet_when_sqlite_already_rolled_back(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "t.sqlite3", SCHEMA).conn
    rollback(conn)  # no transaction: nothing to do, no "no transaction is active"
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t (v) VALUES ('x')")
    rollback(conn)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    conn.close()


def test_schema_needs_one_migration_per_version() -> None:
    with pytest.raises(ValueError, match="migrations"):
        Schema("bad", 2, SCHEMA.migrations[:1])
