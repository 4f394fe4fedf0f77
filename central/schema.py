"""The platform database: one schema, created (idempotently) by ``migrate``.

Readings are deduplicated by ``id`` (primary key); a reading that comes back
with another body goes to ``conflicts``, never silently dropped. ``ts`` and
``clock`` are left out of that comparison: the gateway re-sends a reading with
its ``ts`` corrected once its clock syncs (CONTRACT.md, "Readings").
Alarms are also written to ``alarms`` in the same transaction, so they are
queryable as soon as their batch is acknowledged.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id          text PRIMARY KEY,
    site        text NOT NULL,
    gateway     text NOT NULL,
    epoch       text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    priority    text NOT NULL,
    ts          timestamptz,
    body        jsonb NOT NULL,
    -- the batch's sent_at: the gateway's sending order, which competing
    -- consumers do not keep in received_at (alarms first after an outage)
    sent_at     timestamptz,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- No index on (site, gateway, epoch, seq): it cost a third of each insert.
-- ``report`` reads seq_ranges instead.
DROP INDEX IF EXISTS readings_by_seq;

-- The seq ranges each committed group holds, appended with its readings
-- (central/store.py); ``report`` merges them (central/report.py).
CREATE TABLE IF NOT EXISTS seq_ranges (
    site        text NOT NULL,
    gateway     text NOT NULL,
    epoch       text NOT NULL,
    lo          bigint NOT NULL,
    hi          bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS alarms (
    id          text PRIMARY KEY,
    site        text NOT NULL,
    gateway     text NOT NULL,
    type        text NOT NULL,
    device      text,
    ts          timestamptz,
    data        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarms_by_time ON alarms (received_at);

CREATE TABLE IF NOT EXISTS conflicts (
    id          text NOT NULL,
    stored      jsonb NOT NULL,
    received    jsonb NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, received)
);

-- Messages that could not be read (bad JSON, wrong shape): kept, not lost.
CREATE TABLE IF NOT EXISTS rejected (
    routing_key text NOT NULL,
    reason      text NOT NULL,
    body        bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS gateway_status (
    site        text NOT NULL,
    gateway     text NOT NULL,
    state       text NOT NULL,
    at          timestamptz NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, gateway)
);

CREATE TABLE IF NOT EXISTS access_state (
    site        text NOT NULL,
    gateway     text NOT NULL,
    version     bigint NOT NULL,
    digest      text NOT NULL,
    at          timestamptz NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, gateway)
);

CREATE TABLE IF NOT EXISTS command_results (
    id          text PRIMARY KEY,
    site        text NOT NULL,
    gateway     text NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Access lists (CONTRACT.md 1.1, "Access lists"): the estate's cards and
-- profiles, one version counter per site, and a change log per version so a
-- gate can be sent only what changed since the version it holds.
CREATE TABLE IF NOT EXISTS access_version (
    site        text PRIMARY KEY,
    version     bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS cards (
    site        text NOT NULL,
    card        text NOT NULL,
    holder      text,
    gateways    text[],
    doors       text[],
    valid_from  text,
    valid_until text,
    profile     text,
    version     bigint NOT NULL,
    PRIMARY KEY (site, card)
);
CREATE TABLE IF NOT EXISTS profiles (
    site        text NOT NULL,
    name        text NOT NULL,
    body        jsonb NOT NULL,
    version     bigint NOT NULL,
    PRIMARY KEY (site, name)
);
CREATE TABLE IF NOT EXISTS access_changes (
    site        text NOT NULL,
    version     bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('card', 'profile')),
    name        text NOT NULL,
    PRIMARY KEY (site, version, kind, name)
);
-- What the reconciler sent each gate: a delta is built only from a version
-- whose digest the gate reports back exactly.
CREATE TABLE IF NOT EXISTS access_sent (
    site        text NOT NULL,
    gateway     text NOT NULL,
    version     bigint NOT NULL,
    digest      text NOT NULL,
    kind        text NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, gateway, version)
);
"""


# A database from before seq_ranges: its ranges, computed once from readings.
_BACKFILL = """
INSERT INTO seq_ranges (site, gateway, epoch, lo, hi)
SELECT site, gateway, epoch, min(seq), max(seq) FROM (
    SELECT site, gateway, epoch, seq,
           seq - row_number() OVER (PARTITION BY site, gateway, epoch ORDER BY seq) AS island
    FROM readings
) r GROUP BY site, gateway, epoch, island
"""


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create every table and index that is missing (safe to run by each worker)."""
    with conn.transaction():
        # One migrator at a time: CREATE ... IF NOT EXISTS races on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(7212)")
        conn.execute(SCHEMA)  # a constant, not user input
        row = conn.execute(
            "SELECT NOT EXISTS (SELECT FROM seq_ranges) AND EXISTS (SELECT FROM readings)"
        ).fetchone()
        if row is not None and row[0]:
            conn.execute(_BACKFILL)
