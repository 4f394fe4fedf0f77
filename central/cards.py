"""Cards and profiles in PostgreSQL: ``cards import``, ``cards revoke``, a gate's list.

Every change bumps the site's version and records which cards and profiles
changed at that version (``access_changes``), so the reconciler can send a
gate only what changed since the version it holds. A change also sends
``NOTIFY access_changed`` so the reconciler acts at once.

Import file (JSON): ``{"profiles": {name: profile}, "cards": [entry, ...]}``,
each entry the contract's six keys (``holder``, ``doors``, ``from``,
``until``, ``profile`` may be left out: null) plus an optional ``gateways``
(the gates of the site it applies to; absent: every gate). An import is the
whole list of the site: cards and profiles it does not name are removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from central.access import Entry, Profiles, check_profile, entry, normalise_card

_CARD_COLUMNS = "card, holder, doors, valid_from, valid_until, profile, gateways"
NOTIFY = "SELECT pg_notify('access_changed', %s)"


def read_import(path: Path | str) -> tuple[list[tuple[Entry, list[str] | None]], Profiles]:
    """Parse and check an import file.

    Raises:
        OSError: unreadable file.
        ValueError: bad JSON, or the first bad record (with its index).
    """
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or set(doc) - {"profiles", "cards"}:
        raise ValueError('the file is {"profiles": {...}, "cards": [...]}')
    profiles = {name: check_profile(name, body) for name, body in doc.get("profiles", {}).items()}
    records: list[tuple[Entry, list[str] | None]] = []
    seen: set[str] = set()
    for index, raw in enumerate(doc.get("cards", [])):
        try:
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            card = entry(raw, profiles)
            gateways = raw.get("gateways")
            if gateways is not None and not (
                isinstance(gateways, list) and all(isinstance(g, str) for g in gateways)
            ):
                raise ValueError("gateways must be a list of gateway ids or absent")
        except ValueError as exc:
            raise ValueError(f"cards[{index}]: {exc}") from exc
        if card["card"] in seen:
            raise ValueError(f"cards[{index}]: card {card['card']} twice")
        seen.add(card["card"])
        records.append((card, sorted(set(gateways)) if gateways is not None else None))
    return records, profiles


def _row(card: Entry, gateways: list[str] | None) -> tuple[Any, ...]:
    return (
        card["card"],
        card["holder"],
        card["doors"],
        card["from"],
        card["until"],
        card["profile"],
        gateways,
    )


def _lock_version(conn: psycopg.Connection[Any], site: str) -> int:
    conn.execute("INSERT INTO access_version VALUES (%s, 0) ON CONFLICT DO NOTHING", (site,))
    row = conn.execute(
        "SELECT version FROM access_version WHERE site = %s FOR UPDATE", (site,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _commit_version(
    conn: psycopg.Connection[Any], site: str, version: int, cards: set[str], profiles: set[str]
) -> None:
    conn.execute("UPDATE access_version SET version = %s WHERE site = %s", (version, site))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO access_changes VALUES (%s, %s, %s, %s)",
            [(site, version, "card", c) for c in cards]
            + [(site, version, "profile", p) for p in profiles],
        )
    conn.execute(NOTIFY, (site,))


def import_list(
    conn: psycopg.Connection[Any],
    site: str,
    records: Sequence[tuple[Entry, list[str] | None]],
    profiles: Mapping[str, Any],
) -> int:
    """Make the site's list exactly ``records`` and ``profiles``; return its version."""
    with conn.transaction():
        version = _lock_version(conn, site)
        new = version + 1
        existing = {
            row[0]: tuple(row)
            for row in conn.execute(f"SELECT {_CARD_COLUMNS} FROM cards WHERE site = %s", (site,))
        }
        wanted = {card["card"]: _row(card, gateways) for card, gateways in records}
        changed = [row for card, row in wanted.items() if existing.get(card) != row]
        removed = set(existing) - set(wanted)
        old_profiles = dict(
            conn.execute("SELECT name, body FROM profiles WHERE site = %s", (site,)).fetchall()
        )
        changed_profiles = {n for n, b in profiles.items() if old_profiles.get(n) != b}
        removed_profiles = set(old_profiles) - set(profiles)
        if not (changed or removed or changed_profiles or removed_profiles):
            return version
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO profiles (site, name, body, version) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (site, name) DO UPDATE SET body = EXCLUDED.body, "
                "version = EXCLUDED.version",
                [(site, n, json.dumps(profiles[n]), new) for n in changed_profiles],
            )
            cur.executemany(
                f"INSERT INTO cards (site, {_CARD_COLUMNS}, version) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (site, card) DO UPDATE "
                "SET holder = EXCLUDED.holder, doors = EXCLUDED.doors, "
                "valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until, "
                "profile = EXCLUDED.profile, gateways = EXCLUDED.gateways, "
                "version = EXCLUDED.version",
                [(site, *row, new) for row in changed],
            )
        conn.execute(
            "DELETE FROM cards WHERE site = %s AND card = ANY(%s)", (site, sorted(removed))
        )
        conn.execute(
            "DELETE FROM profiles WHERE site = %s AND name = ANY(%s)",
            (site, sorted(removed_profiles)),
        )
        _commit_version(
            conn, site, new, {r[0] for r in changed} | removed, changed_profiles | removed_profiles
        )
        return new


def revoke(conn: psycopg.Connection[Any], card_text: str) -> list[tuple[str, int]]:
    """Remove a card from every site that lists it; return ``(site, new version)`` pairs."""
    card = normalise_card(card_text)
    out = []
    with conn.transaction():
        sites = [
            r[0]
            for r in conn.execute("SELECT site FROM cards WHERE card = %s ORDER BY site", (card,))
        ]
        for site in sites:
            new = _lock_version(conn, site) + 1
            conn.execute("DELETE FROM cards WHERE site = %s AND card = %s", (site, card))
            _commit_version(conn, site, new, {card}, set())
            out.append((site, new))
    return out


def site_version(conn: psycopg.Connection[Any], site: str) -> int:
    row = conn.execute("SELECT version FROM access_version WHERE site = %s", (site,)).fetchone()
    return int(row[0]) if row else 0


def gate_list(
    conn: psycopg.Connection[Any], site: str, gateway: str
) -> tuple[list[Entry], Profiles]:
    """The cards (contract entries) and profiles this gate should hold now."""
    cards = [
        {"card": c, "holder": h, "doors": d, "from": f, "until": u, "profile": p}
        for c, h, d, f, u, p in conn.execute(
            "SELECT card, holder, doors, valid_from, valid_until, profile FROM cards "
            "WHERE site = %s AND (gateways IS NULL OR %s = ANY(gateways))",
            (site, gateway),
        )
    ]
    profiles = dict(
        conn.execute("SELECT name, body FROM profiles WHERE site = %s", (site,)).fetchall()
    )
    return cards, profiles


def changes_since(conn: psycopg.Connection[Any], site: str, base: int) -> tuple[set[str], set[str]]:
    """Cards and profiles changed after version ``base``."""
    cards: set[str] = set()
    profiles: set[str] = set()
    for kind, name in conn.execute(
        "SELECT DISTINCT kind, name FROM access_changes WHERE site = %s AND version > %s",
        (site, base),
    ):
        (cards if kind == "card" else profiles).add(name)
    return cards, profiles
