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
    WireReading,
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


_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    id text, site text, gateway text, epoch text, seq bigint, type text,
    priority text, ts text, body jsonb
) ON COMMIT DELETE ROWS
"""
_COLUMNS = "id, site, gateway, epoch, seq, type, priority, ts, body"
_MOVE_READINGS = f"""
INSERT INTO readings ({_COLUMNS})
SELECT id, site, gateway, epoch, seq, type, priority, ts::timestamptz, body
FROM incoming ORDER BY id
ON CONFLICT (id) DO NOTHING
"""
_KEEP_CONFLICTS = """
INSERT INTO conflicts (id, stored, received)
SELECT DISTINCT i.id, r.body, i.body FROM incoming i JOIN readings r USING (id)
WHERE (r.body - 'ts' - 'clock') <> (i.body - 'ts' - 'clock')
ON CONFLICT DO NOTHING
"""
_MOVE_ALARMS = """
INSERT INTO alarms (id, site, gateway, type, device, ts, data)
SELECT DISTINCT ON (id) id, site, gateway, type, body->>'device', ts::timestamptz, body->'data'
FROM incoming WHERE priority = 'alarm' ORDER BY id
ON CONFLICT (id) DO NOTHING
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
    readings: list[tuple[str, str, WireReading]] = field(default_factory=list)
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
        for attempt in range(RETRIES):
            try:
                await self._write_group(group)
                return counts
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == RETRIES - 1:
                    raise
                _LOGGER.info("ingest: deadlock, retrying the group attempt=%d", attempt + 1)
        raise AssertionError("unreachable")

    async def _write_group(self, group: _Group) -> None:
        conn = self._conn
        if not self._prepared:
            await conn.execute(_INCOMING)
            await conn.commit()
            self._prepared = True
        async with conn.transaction(), conn.cursor() as cur:
            if group.readings:
                await self._load(cur, group.readings)
                await cur.execute(_MOVE_READINGS)
                await cur.execute(_KEEP_CONFLICTS)
                await cur.execute(_MOVE_ALARMS)
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
        self, cur: psycopg.AsyncCursor[Any], rows: list[tuple[str, str, WireReading]]
    ) -> None:
        values = [
            (r.id, site, gateway, r.epoch, r.seq, r.type, r.priority, r.ts, r.body)
            for site, gateway, r in rows
        ]
        if self._write is WriteMode.COPY:
            async with cur.copy(f"COPY incoming ({_COLUMNS}) FROM STDIN") as copy:
                for row in values:
                    await copy.write_row(row)
        else:
            await cur.executemany(
                f"INSERT INTO incoming ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values,
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
                group.readings.extend((where.site, where.gateway, r) for r in batch)
                counts.readings += len(batch)
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
