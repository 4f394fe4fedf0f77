"""Writes one group of broker messages to PostgreSQL in one transaction.

The ingest worker acknowledges a group only after ``IngestStore.commit``
returns, so a crash anywhere before that leaves the messages on the queue for
another worker, and ``id`` makes the second delivery harmless.

Readings go first into a per-connection temporary table (by COPY or by
batched INSERT: ``write``; the throughput benchmark measures both), then one
statement each moves new ones into ``readings`` and ``alarms``, and keeps
same-id-different-body arrivals in ``conflicts``. Rows are inserted in ``id``
order, so two workers holding overlapping groups (a redelivery) lock index
entries in the same order; a deadlock is still retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import errors

from central.wire import (
    Kind,
    WireError,
    parse_batch,
    parse_result,
    parse_stamped,
    route,
)

_LOGGER = logging.getLogger(__name__)
RETRIES = 5


class WriteMode(StrEnum):
    COPY = "copy"
    INSERT = "insert"


@dataclass(slots=True)
class IngestCounts:
    messages: int = 0
    readings: int = 0
    rejected: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


# ``json``, not ``jsonb``: COPY only checks it; each reading is parsed once, below.
_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming_batch (
    site text, gateway text, epoch text, body json
) ON COMMIT DELETE ROWS
"""
# One statement splits the batches (a ``ts`` outside the contract's form is
# stored as NULL, the body keeps it; one the pattern lets through but
# PostgreSQL cannot read, a 30 February, fails the group, which ``commit``
# then writes message by message), inserts the new readings and their alarms,
# and keeps conflicts. The insert's own rows are not visible to the rest of
# the statement, so ``readings`` there holds only what was stored before:
# only the ids the insert skipped are compared with it, and copies of one id
# within the group with each other.
_MOVE = r"""
WITH batches AS MATERIALIZED (
    -- each batch parsed once; its readings split out below
    SELECT site, gateway, epoch, doc->'readings' AS readings,
           CASE WHEN doc->>'sent_at' ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$'
                THEN (doc->>'sent_at')::timestamptz END AS sent_at
    FROM (SELECT site, gateway, epoch, body::jsonb AS doc FROM incoming_batch) parsed
), incoming AS MATERIALIZED (
    SELECT r->>'id' AS id, b.site, b.gateway, b.epoch, (r->>'seq')::bigint AS seq,
           r->>'type' AS type, coalesce(r->>'priority', 'routine') AS priority,
           CASE WHEN r->>'ts' ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$'
                THEN (r->>'ts')::timestamptz END AS ts,
           r AS body, row_number() OVER () AS n, b.sent_at
    FROM batches b CROSS JOIN LATERAL jsonb_array_elements(b.readings) r
), ins AS (
    INSERT INTO readings (id, site, gateway, epoch, seq, type, priority, ts, body, sent_at)
    SELECT id, site, gateway, epoch, seq, type, priority, ts, body, sent_at
    FROM incoming ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), alarms AS (
    INSERT INTO alarms (id, site, gateway, type, device, ts, data)
    SELECT DISTINCT ON (id) id, site, gateway, type, body->>'device', ts, body->'data'
    FROM incoming WHERE priority = 'alarm' ORDER BY id
    ON CONFLICT (id) DO NOTHING
), pairs AS (
    SELECT i.id, r.body AS stored, i.body AS received
    FROM incoming i JOIN readings r USING (id)
    WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = i.id)
    UNION ALL
    SELECT id, first_value(body) OVER (PARTITION BY id ORDER BY n), body FROM incoming
    WHERE id IN (SELECT id FROM incoming GROUP BY id HAVING count(*) > 1)
)
INSERT INTO conflicts (id, stored, received)
SELECT DISTINCT id, stored, received FROM pairs
WHERE (stored - 'ts' - 'clock') <> (received - 'ts' - 'clock')
ON CONFLICT DO NOTHING
"""
# Latest arrival wins: a gateway's statuses are seconds apart, and the will
# carries the ``at`` of its connect, so ``at`` cannot order it (README).
_STATUS = """
INSERT INTO gateway_status (site, gateway, state, at, body) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (site, gateway) DO UPDATE SET state = EXCLUDED.state, at = EXCLUDED.at,
    body = EXCLUDED.body, received_at = now()
"""
_ACCESS_STATE = """
INSERT INTO access_state (site, gateway, version, digest, at, body) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (site, gateway) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest,
    at = EXCLUDED.at, body = EXCLUDED.body, received_at = now()
"""
_RESULT = """
INSERT INTO command_results (id, site, gateway, body) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""
_REJECTED = "INSERT INTO rejected (routing_key, reason, body) VALUES (%s, %s, %s)"


@dataclass(slots=True)
class _Group:
    batches: list[tuple[str, str, str, str]] = field(default_factory=list)  # site, gw, epoch, body
    statuses: list[tuple[object, ...]] = field(default_factory=list)
    access: list[tuple[object, ...]] = field(default_factory=list)
    results: list[tuple[object, ...]] = field(default_factory=list)
    rejected: list[tuple[str, str, bytes]] = field(default_factory=list)


class IngestStore:
    """One worker's database side; owns its connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, write: WriteMode) -> None:
        self._conn = conn
        self._write = write
        self._prepared = False

    async def commit(self, messages: Sequence[tuple[str, bytes]]) -> IngestCounts:
        """Write ``(routing_key, body)`` messages; returns once committed.

        Raises:
            psycopg.Error: the database failed (after retrying deadlocks);
                nothing of the group is committed then.
        """
        group, counts = _decode(messages)
        try:
            await self._write_retrying(group)
        except errors.DataError:
            # Something PostgreSQL cannot take (a \u0000, a 30 February):
            # find the message, keep it aside, never block the queue on it.
            _LOGGER.warning("ingest: a group failed on its data; writing it message by message")
            for key, body in messages:
                one, _ = _decode([(key, body)])
                try:
                    await self._write_retrying(one)
                except errors.DataError as exc:
                    counts.rejected += 1
                    await self._write_retrying(_Group(rejected=[(key, f"database: {exc}", body)]))
        return counts

    async def _write_retrying(self, group: _Group) -> None:
        for attempt in range(RETRIES):
            try:
                await self._write_group(group)
                return
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == RETRIES - 1:
                    raise
                _LOGGER.info("ingest: deadlock, retrying the group attempt=%d", attempt + 1)

    async def _write_group(self, group: _Group) -> None:
        conn = self._conn
        if not self._prepared:
            await conn.execute(_INCOMING)
            await conn.commit()
            self._prepared = True
        async with conn.transaction(), conn.cursor() as cur:
            if group.batches:
                await self._load(cur, group.batches)
                await cur.execute(_MOVE)
            if group.statuses:
                await cur.executemany(_STATUS, group.statuses)
            if group.access:
                await cur.executemany(_ACCESS_STATE, group.access)
                # The reconciler answers a gate's new state at once.
                await cur.execute("SELECT pg_notify('access_changed', '')")
            if group.results:
                await cur.executemany(_RESULT, group.results)
            if group.rejected:
                await cur.executemany(_REJECTED, group.rejected)

    async def _load(
        self, cur: psycopg.AsyncCursor[Any], batches: list[tuple[str, str, str, str]]
    ) -> None:
        if self._write is WriteMode.COPY:
            async with cur.copy(
                "COPY incoming_batch (site, gateway, epoch, body) FROM STDIN"
            ) as copy:
                for row in batches:
                    await copy.write_row(row)
        else:
            await cur.executemany(
                "INSERT INTO incoming_batch (site, gateway, epoch, body) VALUES (%s, %s, %s, %s)",
                batches,
            )


def _decode(messages: Sequence[tuple[str, bytes]]) -> tuple[_Group, IngestCounts]:
    group = _Group()
    counts = IngestCounts(messages=len(messages))
    for key, body in messages:
        try:
            where = route(key)
            kind = where.kind
            counts.kinds[kind] = counts.kinds.get(kind, 0) + 1
            if kind in (Kind.READINGS, Kind.ALARMS):
                batch = parse_batch(body, where)
                group.batches.append((where.site, where.gateway, batch.epoch, body.decode()))
                counts.readings += batch.count
            elif kind is Kind.STATUS:
                doc, at = parse_stamped(body)
                group.statuses.append(
                    (where.site, where.gateway, str(doc.get("state")), at, _json(doc))
                )
            elif kind is Kind.ACCESS_STATE:
                doc, at = parse_stamped(body)
                version, digest = doc.get("version"), doc.get("digest")
                if not isinstance(version, int) or not isinstance(digest, str):
                    raise WireError("access state without version or digest")
                group.access.append((where.site, where.gateway, version, digest, at, _json(doc)))
            else:
                doc = parse_result(body)
                if not isinstance(doc.get("id"), str):
                    raise WireError("result without id")
                group.results.append((doc["id"], where.site, where.gateway, _json(doc)))
        except WireError as exc:
            counts.rejected += 1
            group.rejected.append((key, str(exc), body))
    return group, counts


def _json(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
