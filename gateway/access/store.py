"""The platform's access list, durable in SQLite (``access.sqlite3`` in ``data_dir``).

CONTRACT.md 1.1, "Access lists". Tables (schema version in ``user_version``):

- ``meta``: the version held, card count, digest, ``ignored`` and
  ``last_error`` of the state message;
- ``cards``: one row per card, keyed by card id (``WITHOUT ROWID``), holding
  the entry's canonical JSON as held (what the digest covers);
- ``profiles``: by name, canonical JSON;
- ``stage``, ``stage_parts``, ``stage_cards``: the snapshot being gathered
  (at most one version at a time), kept across restarts.

Two connections, one owner each (STYLE.md §4). The writer runs every change
on one worker thread (``AccessWriter``): a 200,000-card apply takes seconds,
and must not stall the doors. The reader (``AccessStore``) answers lookups on
the event loop; WAL lets it read the committed list while a change is being
written, and each lookup reads the version, the profiles when they changed,
and the card in one read transaction, so a door decides with the old list or
the new one, never a mix. A swipe is one indexed lookup: memory does not grow
with the number of cards.

Commits are ``synchronous=FULL``: a change is on disk before the state that
announces it is published.

Longer than 400 lines because the reader, the writer and the SQL they share
(schema, staging, apply, digest) must agree on one schema; split, each half
would restate it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.access_rules import CardEntry, Profile
from gateway.access.digest import EMPTY_DIGEST, canonical_text, digest_of
from gateway.access.message import (
    AccessDelta,
    AccessErrorReason,
    AccessRefused,
    AccessSnapshotPart,
    entry_from_text,
    parse_profile,
)
from gateway.storage.sqlite import Schema, open_database, statements

_LOGGER = logging.getLogger(__name__)

DB_FILENAME = "access.sqlite3"
SCHEMA_VERSION = 1
DIGEST_BATCH = 2000  # rows per fetch while hashing the list
STALE_PARTS_S = 3600.0
"""Parts of a version are discarded when none has come for this long (CONTRACT.md)."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
        "CREATE TABLE cards (card TEXT PRIMARY KEY, profile TEXT, entry TEXT NOT NULL)"
        " WITHOUT ROWID",
        "CREATE INDEX cards_profile ON cards (profile) WHERE profile IS NOT NULL",
        "CREATE TABLE profiles (name TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID",
        """CREATE TABLE stage (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL,
            parts INTEGER NOT NULL,
            profiles TEXT,
            last_at REAL NOT NULL
        )""",
        "CREATE TABLE stage_parts (part INTEGER PRIMARY KEY)",
        "CREATE TABLE stage_cards (card TEXT PRIMARY KEY, profile TEXT, entry TEXT NOT NULL)"
        " WITHOUT ROWID",
    ),
)


@dataclass(frozen=True, slots=True)
class Pending:
    version: int
    parts: int
    received: int


@dataclass(frozen=True, slots=True)
class LastError:
    version: int | None
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class AccessState:
    """What ``{root}/access/state`` reports (CONTRACT.md "State")."""

    version: int
    cards: int
    digest: str
    pending: Pending | None
    ignored: int
    last_error: LastError | None


@dataclass(frozen=True, slots=True)
class Change:
    """An applied change: the ``access.changed`` reading's data."""

    from_version: int
    to_version: int
    upserts: int
    deletes: int
    cards: int
    digest: str


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What a verified snapshot part did: ``change`` when it completed the snapshot."""

    change: Change | None = None
    ignored: bool = False


class _PartsMismatchError(AccessRefused):
    """Parts of one version disagree on ``parts``: the gathering goes."""


SCHEMA = Schema(
    name="access", version=SCHEMA_VERSION, migrations=tuple(statements(*m) for m in _MIGRATIONS)
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating, checking and migrating) the access database, for any one thread.

    Through the shared helper (``gateway.storage.sqlite``): an unusable file is
    moved aside, and the gateway starts with no list (every card denied until
    the next snapshot) rather than with a list it cannot vouch for. Commits
    are then made ``synchronous=FULL``: changes here are rare and announced.
    """
    opened = open_database(path, SCHEMA, check_same_thread=False)
    if opened.moved_aside is not None:
        _LOGGER.error(
            "access database unusable, moved aside; no list until the next snapshot: moved_to=%s",
            opened.moved_aside,
        )
    opened.conn.execute("PRAGMA synchronous=FULL")
    return opened.conn


def _profile_from_text(text: str) -> Profile:
    return parse_profile(json.loads(text), "held", 0).profile


def _meta(conn: sqlite3.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _meta_int(meta: Mapping[str, str | None], key: str) -> int:
    value = meta.get(key)
    return int(value) if value is not None else 0


def read_state(conn: sqlite3.Connection) -> AccessState:
    """The state as committed (one read transaction)."""
    conn.execute("BEGIN")
    try:
        meta = _meta(conn)
        stage = conn.execute("SELECT version, parts FROM stage").fetchone()
        received = conn.execute("SELECT count(*) FROM stage_parts").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    error_text = meta.get("last_error")
    error = json.loads(error_text) if error_text else None
    return AccessState(
        version=_meta_int(meta, "version"),
        cards=_meta_int(meta, "cards"),
        digest=meta.get("digest") or EMPTY_DIGEST,
        pending=Pending(stage[0], stage[1], int(received)) if stage else None,
        ignored=_meta_int(meta, "ignored"),
        last_error=LastError(error["version"], error["reason"], error["at"]) if error else None,
    )


_LOOKUP = (
    "SELECT (SELECT value FROM meta WHERE key = 'version'),"
    " (SELECT entry FROM cards WHERE card = ?)"
)


class AccessStore:
    """The list the doors decide with: an ``AccessList`` read from SQLite (module docstring).

    Used from the event loop only. ``version`` and ``profiles()`` are those
    of the list the latest ``lookup``/``lookup_all`` read, so a decision made
    from the three never mixes two versions.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._version = 0
        self._profiles: dict[str, Profile] = {}
        self._profiles_version = -1
        with self._read():
            self._sync_meta()

    @classmethod
    def open(cls, data_dir: Path) -> AccessStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_FILENAME)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    def _sync_meta(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        self._version = int(row[0]) if row else 0
        if self._version != self._profiles_version:
            rows = self._conn.execute("SELECT name, body FROM profiles").fetchall()
            self._profiles = {name: _profile_from_text(body) for name, body in rows}
            self._profiles_version = self._version

    # -- AccessList -----------------------------------------------------------

    @property
    def version(self) -> int | None:
        return self._version

    def refresh(self) -> None:
        """Nothing to do: every lookup reads the committed list."""

    def lookup(self, card_hex: str) -> CardEntry | None:
        entries = self.lookup_all(card_hex)
        return entries[0] if entries else None

    def lookup_all(self, card_hex: str) -> tuple[CardEntry, ...]:
        # One statement is one read snapshot: the version and the card agree.
        version_text, text = self._conn.execute(_LOOKUP, (card_hex,)).fetchone()
        if (int(version_text) if version_text is not None else 0) != self._profiles_version:
            with self._read():  # a new version: its profiles, from one snapshot
                self._sync_meta()
                version_text, text = self._conn.execute(_LOOKUP, (card_hex,)).fetchone()
        self._version = int(version_text) if version_text is not None else 0
        return (entry_from_text(text),) if text is not None else ()

    def entries(self) -> Iterator[CardEntry]:
        """Every entry sorted by card, from one read snapshot (a second connection)."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            for (text,) in conn.execute("SELECT entry FROM cards ORDER BY card"):
                yield entry_from_text(text)
        finally:
            conn.close()

    def profiles(self) -> Mapping[str, Profile]:
        return self._profiles

    # -- state ----------------------------------------------------------------

    def state(self) -> AccessState:
        return read_state(self._conn)


class AccessWriter:
    """Every change to the list; run its methods on one worker thread only."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def state(self) -> AccessState:
        return read_state(self._conn)

    def version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def pending_version(self) -> int | None:
        row = self._conn.execute("SELECT version FROM stage").fetchone()
        return int(row[0]) if row else None

    # -- what the state counts --------------------------------------------------

    def record_ignored(self) -> None:
        with self._write() as conn:
            _bump(conn, "ignored")

    def record_error(self, reason: AccessErrorReason, version: int | None, at: float) -> None:
        error = canonical_text({"version": version, "reason": reason.value, "at": at})
        with self._write() as conn:
            _set(conn, "last_error", error)

    # -- delta -------------------------------------------------------------------

    def apply_delta(self, delta: AccessDelta) -> Change:
        """Apply a verified delta whose version is above the version held.

        Raises:
            AccessRefused: ``base_mismatch`` (base is not the version held) or
                ``bad_schema`` (a profile name the list would not hold after it).
        """
        version = delta.envelope.version
        with self._write() as conn:
            held = _meta_int(_meta(conn), "version")
            if delta.base != held:
                raise AccessRefused(
                    AccessErrorReason.BASE_MISMATCH,
                    f"base {delta.base}, held {held}",
                    version=version,
                )
            names = {row[0] for row in conn.execute("SELECT name FROM profiles")}
            names = (names - set(delta.delete_profiles)) | delta.profiles.keys()
            for wire in delta.upsert:
                if wire.profile is not None and wire.profile not in names:
                    raise AccessRefused(
                        AccessErrorReason.BAD_SCHEMA,
                        f"card entry names unknown profile {wire.profile!r}",
                        version=version,
                    )
            replaced = {wire.card for wire in delta.upsert} | set(delta.delete)
            for name in delta.delete_profiles:
                for (card,) in conn.execute("SELECT card FROM cards WHERE profile = ?", (name,)):
                    if card not in replaced:
                        raise AccessRefused(
                            AccessErrorReason.BAD_SCHEMA,
                            f"profile {name!r} deleted but still named by a card",
                            version=version,
                        )
            upserts = 0
            for wire in delta.upsert:
                text = wire.text
                row = conn.execute(
                    "SELECT entry FROM cards WHERE card = ?", (wire.card,)
                ).fetchone()
                if row is None or row[0] != text:
                    upserts += 1
                    conn.execute(
                        "INSERT OR REPLACE INTO cards (card, profile, entry) VALUES (?, ?, ?)",
                        (wire.card, wire.profile, text),
                    )
            deletes = 0
            for card in delta.delete:
                deletes += conn.execute("DELETE FROM cards WHERE card = ?", (card,)).rowcount
            conn.executemany(
                "DELETE FROM profiles WHERE name = ?", [(n,) for n in delta.delete_profiles]
            )
            conn.executemany(
                "INSERT OR REPLACE INTO profiles (name, body) VALUES (?, ?)",
                [(name, canonical_text(p.wire)) for name, p in delta.profiles.items()],
            )
            return _finish_change(conn, held, version, upserts, deletes)

    # -- snapshot ------------------------------------------------------------------

    def stage_part(self, part: AccessSnapshotPart, now: float) -> PartOutcome:
        """Gather a verified part whose version is above the version held.

        Applies the snapshot, atomically, when it completes it.

        Raises:
            AccessRefused: ``bad_schema``: parts disagreeing on ``parts`` (the
                gathering is discarded), a card already in another part (this
                part leaves no trace), or a profile name the complete snapshot
                does not define (the snapshot is discarded).
        """
        version = part.envelope.version
        discard = False
        try:
            with self._write() as conn:
                outcome = self._stage(conn, part, now)
                if outcome.ignored or outcome.change is not None:
                    return outcome
                received = conn.execute("SELECT count(*) FROM stage_parts").fetchone()[0]
                if received < part.parts:
                    return outcome
                discard = True  # a complete snapshot is applied or refused, never kept
                return PartOutcome(change=_apply_stage(conn, version))
        except _PartsMismatchError as exc:
            self.discard_stage()  # the contract discards the whole gathering
            raise AccessRefused(exc.reason, exc.detail, version=exc.version) from None
        except AccessRefused:
            if discard:
                self.discard_stage()
            raise

    def _stage(self, conn: sqlite3.Connection, part: AccessSnapshotPart, now: float) -> PartOutcome:
        version = part.envelope.version
        if version <= _meta_int(_meta(conn), "version"):
            return PartOutcome(ignored=True)  # a version already held or passed
        stage = conn.execute("SELECT version, parts FROM stage").fetchone()
        if stage is not None and version < stage[0]:
            return PartOutcome(ignored=True)  # a part of a superseded version
        if stage is not None and version > stage[0]:
            _clear_stage(conn)
            stage = None
        if stage is not None and part.parts != stage[1]:
            raise _PartsMismatchError(
                AccessErrorReason.BAD_SCHEMA,
                f"parts {part.parts}, earlier parts said {stage[1]}",
                version=version,
            )
        if stage is None:
            conn.execute(
                "INSERT INTO stage (id, version, parts, last_at) VALUES (1, ?, ?, ?)",
                (version, part.parts, now),
            )
        elif conn.execute("SELECT 1 FROM stage_parts WHERE part = ?", (part.part,)).fetchone():
            return PartOutcome(ignored=True)  # a part received twice
        try:
            conn.executemany(
                "INSERT INTO stage_cards (card, profile, entry) VALUES (?, ?, ?)",
                ((w.card, w.profile, w.text) for w in part.cards),
            )
        except sqlite3.IntegrityError as exc:
            raise AccessRefused(
                AccessErrorReason.BAD_SCHEMA, "a card is also in another part", version=version
            ) from exc
        conn.execute("INSERT INTO stage_parts (part) VALUES (?)", (part.part,))
        conn.execute("UPDATE stage SET last_at = ?", (now,))
        if part.profiles is not None:
            profiles = {name: p.wire for name, p in part.profiles.items()}
            conn.execute("UPDATE stage SET profiles = ?", (canonical_text(profiles),))
        return PartOutcome()

    def discard_stage(self) -> None:
        with self._write() as conn:
            _clear_stage(conn)

    def discard_stale(self, now: float) -> bool:
        """Drop a gathering no part of which came for ``STALE_PARTS_S``; True if one was."""
        with self._write() as conn:
            row = conn.execute("SELECT last_at FROM stage").fetchone()
            if row is None or now - row[0] < STALE_PARTS_S:
                return False
            _clear_stage(conn)
            return True


def _set(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _bump(conn: sqlite3.Connection, key: str) -> None:
    _set(conn, key, str(_meta_int(_meta(conn), key) + 1))


def _clear_stage(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM stage")
    conn.execute("DELETE FROM stage_parts")
    conn.execute("DELETE FROM stage_cards")


def _apply_stage(conn: sqlite3.Connection, version: int) -> Change:
    """Replace the list with the complete staged snapshot (inside the caller's transaction)."""
    (profiles_text,) = conn.execute("SELECT profiles FROM stage").fetchone()
    profiles: dict[str, Any] = json.loads(profiles_text) if profiles_text else {}
    unknown = conn.execute(
        "SELECT profile FROM stage_cards WHERE profile IS NOT NULL"
        " AND profile NOT IN (SELECT value FROM json_each(?)) LIMIT 1",
        (canonical_text(sorted(profiles)),),
    ).fetchone()
    if profiles_text is None or unknown is not None:
        raise AccessRefused(
            AccessErrorReason.BAD_SCHEMA,
            "the snapshot names a profile it does not define",
            version=version,
        )
    held = _meta_int(_meta(conn), "version")
    upserts = conn.execute(
        "SELECT count(*) FROM stage_cards s LEFT JOIN cards c ON c.card = s.card"
        " WHERE c.entry IS NULL OR c.entry != s.entry"
    ).fetchone()[0]
    deletes = conn.execute(
        "SELECT count(*) FROM cards c WHERE NOT EXISTS"
        " (SELECT 1 FROM stage_cards s WHERE s.card = c.card)"
    ).fetchone()[0]
    conn.execute("DELETE FROM cards")
    conn.execute(
        "INSERT INTO cards (card, profile, entry)"
        " SELECT card, profile, entry FROM stage_cards ORDER BY card"
    )
    conn.execute("DELETE FROM profiles")
    conn.executemany(
        "INSERT INTO profiles (name, body) VALUES (?, ?)",
        [(name, canonical_text(body)) for name, body in profiles.items()],
    )
    _clear_stage(conn)
    return _finish_change(conn, held, version, int(upserts), int(deletes))


def _finish_change(
    conn: sqlite3.Connection, held: int, version: int, upserts: int, deletes: int
) -> Change:
    """Version, count, digest and a cleared ``last_error``, after the list changed."""
    digest = list_digest(conn)
    cards = int(conn.execute("SELECT count(*) FROM cards").fetchone()[0])
    _set(conn, "version", str(version))
    _set(conn, "cards", str(cards))
    _set(conn, "digest", digest)
    _set(conn, "last_error", None)
    # Parts of a version no higher than the one applied can never apply now.
    if conn.execute("DELETE FROM stage WHERE version <= ?", (version,)).rowcount:
        conn.execute("DELETE FROM stage_parts")
        conn.execute("DELETE FROM stage_cards")
    return Change(held, version, upserts, deletes, cards, digest)


def list_digest(conn: sqlite3.Connection) -> str:
    """The digest of the list held, streamed from the table in card order."""
    profiles = {
        name: json.loads(body) for name, body in conn.execute("SELECT name, body FROM profiles")
    }
    cursor = conn.execute("SELECT entry FROM cards ORDER BY card")

    def batches() -> Iterator[list[str]]:
        while rows := cursor.fetchmany(DIGEST_BATCH):
            yield [text for (text,) in rows]

    return digest_of(batches(), canonical_text(profiles))
