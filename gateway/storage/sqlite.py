"""The one way the gateway opens a SQLite database: open, check, migrate, move aside.

Used by the outbox (``outbox.sqlite3``), the command store
(``commands.sqlite3``) and the access store. Each describes its database with
a ``Schema`` (a name for the logs, the version, one migration per version, an
optional shape check) and calls ``open_database``, which:

1. connects (WAL, ``synchronous=NORMAL``: a commit does not sync; the owner
   calls ``sync_database`` when its durability window says so, off the loop);
2. runs ``PRAGMA quick_check`` on an existing file, refuses a schema newer
   than the code, migrates step by step (each step one transaction, together
   with its ``user_version`` bump), then runs the shape check.

A database is moved aside (renamed ``NAME.corrupt-<UTC time>`` with its
``-wal``/``-shm``, never deleted) only when it is unusable: ``quick_check``
fails, the file is not a database, or its schema is newer than this code or
not what its version promises. A lock, an I/O error or a full disk is *not*
corruption: ``open_database`` raises ``sqlite3.OperationalError`` and leaves
the file where it is (moving it would start a new epoch, or forget used
command ids and reopen replay). ``is_disk_full`` tells a full disk apart for
callers that keep working through one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]

# Primary result codes (sqlite3.h) that mean the bytes themselves are bad.
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


class UnusableDatabaseError(Exception):
    """The file fails ``quick_check``, or its schema is newer or of another shape."""


@dataclass(frozen=True, slots=True)
class Schema:
    """What a database should be.

    ``migrations[i]`` takes the schema from version ``i`` to ``i + 1`` (use
    ``statements`` for plain SQL). ``check_shape`` raises
    ``UnusableDatabaseError`` when the tables are not what ``version`` promises.
    ``page_size`` applies only when the file is created.
    """

    name: str
    version: int
    migrations: Sequence[Migration]
    check_shape: Callable[[sqlite3.Connection], None] | None = None
    page_size: int | None = None

    def __post_init__(self) -> None:
        if len(self.migrations) != self.version:
            raise ValueError(f"{self.name}: {len(self.migrations)} migrations for v{self.version}")


@dataclass(frozen=True, slots=True)
class OpenedDatabase:
    conn: sqlite3.Connection
    moved_aside: Path | None  # where an unusable file went, when one was found


def statements(*sql: str) -> Migration:
    """A migration of plain statements, run one by one (``executescript`` would commit)."""

    def migrate(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return migrate


def open_database(
    path: Path, schema: Schema, *, check_same_thread: bool = True, busy_timeout_s: float = 5.0
) -> OpenedDatabase:
    """Open (creating or migrating) the database at ``path``.

    An unusable file is moved aside, logged at ERROR and replaced by a new one.
    ``busy_timeout_s`` is how long a statement waits for another connection's lock.

    Raises:
        sqlite3.OperationalError: locked, unreadable, or the disk is full; the
            file is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return OpenedDatabase(_open_checked(path, schema, check_same_thread, busy_timeout_s), None)
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        reason: Exception = exc
    except UnusableDatabaseError as exc:
        reason = exc
    aside = move_aside(path)
    _LOGGER.error(
        "database unusable, moved aside and starting a new one: database=%s path=%s "
        "moved_to=%s reason=%s",
        schema.name,
        path,
        aside,
        reason,
    )
    return OpenedDatabase(_open_checked(path, schema, check_same_thread, busy_timeout_s), aside)


def _open_checked(
    path: Path, schema: Schema, check_same_thread: bool, busy_timeout_s: float
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        if schema.page_size is not None:
            conn.execute(f"PRAGMA page_size={schema.page_size:d}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > 0:
            problem = quick_check(conn)
            if problem is not None:
                raise UnusableDatabaseError(f"quick_check: {problem}")
        if version > schema.version:
            raise UnusableDatabaseError(
                f"schema version {version} is newer than this gateway's {schema.version}"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for step in range(version, schema.version):
            conn.execute("BEGIN IMMEDIATE")
            try:
                schema.migrations[step](conn)
                conn.execute(f"PRAGMA user_version={step + 1:d}")
            except BaseException:
                rollback(conn)
                raise
            conn.execute("COMMIT")
            _LOGGER.info("database migrated: database=%s version=%d", schema.name, step + 1)
        if schema.check_shape is not None:
            schema.check_shape(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def quick_check(conn: sqlite3.Connection) -> str | None:
    """None when ``PRAGMA quick_check`` passes, else its first complaint."""
    row = conn.execute("PRAGMA quick_check").fetchone()
    if row is not None and row[0] == "ok":
        return None
    return str(row[0]) if row is not None else "no answer"


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open.

    SQLite has already rolled back by itself after some errors (a full disk,
    an I/O error); an unconditional ``ROLLBACK`` would then raise "no
    transaction is active" and hide the real error.
    """
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def is_corruption(exc: sqlite3.Error) -> bool:
    """The error says the file's bytes are bad (not a lock, I/O error or full disk)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def is_disk_full(exc: BaseException) -> bool:
    """The error is SQLite's "database or disk is full" (SQLITE_FULL)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_FULL


def move_aside(path: Path, *, wall: float | None = None) -> Path:
    """Rename the database and its ``-wal``/``-shm`` out of the way; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 0
    while aside.exists():
        suffix += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
    for extra in ("-wal", "-shm"):
        sibling = path.with_name(path.name + extra)
        if sibling.exists():
            sibling.rename(aside.with_name(aside.name + extra))
    if path.exists():
        path.rename(aside)
    return aside


def sync_database(path: Path) -> None:
    """fdatasync the WAL (or, when there is none, the file): every commit so far survives.

    With ``synchronous=NORMAL`` a checkpoint syncs what it copies, so the WAL
    holds everything committed since. Blocking: call it from a worker thread.
    """
    for candidate in (Path(f"{path}-wal"), path):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return
