"""Writes one group of broker messages to PostgreSQL in one transaction.

The ingest worker acknowledges a group only after ``IngestStore.write``
returns, so a crash anywhere before that leaves the messages on the queue for
another worker, and ``id`` makes the second delivery harmless.

``prepare`` (no I/O: the worker runs it while the previous group commits)
splits each batch into its readings (central/wire.py, msgspec: each body is
the gateway's JSON as sent) and formats them as COPY text. They go first into
a per-connection temporary table, one row per reading, then one statement
moves the new ones into ``readings``, one their alarms into ``alarms``, and
the group's seq ranges are appended to ``seq_ranges``. Only when the
insert skipped an id (a redelivery, a resend) does a third statement look for
same-id-different-body arrivals and keep them in ``conflicts``: the common
group pays for no comparison. Rows are inserted in ``id`` order, so two
workers holding overlapping groups lock index entries in the same order; a
deadlock is still retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors

from central.report import islands
from central.wire import (
    Kind,
    Route,
    WireBatch,
    WireError,
    parse_batch,
    parse_result,
    parse_stamped,
    route,
)

_LOGGER = logging.getLogger(__name__)
RETRIES = 5


@dataclass(slots=True)
class IngestCounts:
    messages: int = 0
    readings: int = 0
    rejected: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


# One row per reading, split out of its batch by the worker (central/wire.py):
# COPY parses each body into jsonb once, and nothing is parsed again after.
# ``repeat`` marks a later copy of an id already in the same group; only the
# first copy is inserted, every copy is compared (``_CONFLICTS``).
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS incoming_reading (
    id text, seq bigint, type text, priority text, ts timestamptz, body jsonb,
    site text, gateway text, epoch text, sent_at timestamptz, repeat boolean
) ON COMMIT DELETE ROWS
"""
_STAGE_COPY = """
COPY incoming_reading (id, seq, type, priority, ts, body, site, gateway, epoch, sent_at, repeat)
FROM STDIN
"""
# Rows were staged in ``id`` order, and a scan of the freshly emptied table
# returns them in that order: two workers holding overlapping groups (a
# redelivery) lock index entries in the same order. A deadlock is still retried.
_INSERT_READINGS = """
INSERT INTO readings (id, site, gateway, epoch, seq, type, priority, ts, body, sent_at)
SELECT id, site, gateway, epoch, seq, type, priority, ts, body, sent_at
FROM incoming_reading WHERE NOT repeat
ON CONFLICT (id) DO NOTHING
"""
_INSERT_ALARMS = """
INSERT INTO alarms (id, site, gateway, type, device, ts, data)
SELECT id, site, gateway, type, body->>'device', ts, coalesce(body->'data', 'null')
FROM incoming_reading WHERE priority = 'alarm' AND NOT repeat
ON CONFLICT (id) DO NOTHING
"""
_RANGES_COPY = "COPY seq_ranges (site, gateway, epoch, lo, hi) FROM STDIN"
# Run only when some id was not new (the insert's row count says so): every
# copy that differs from what ``readings`` now holds, the first copy or an
# earlier one, is a conflict. One index lookup per row (a scalar subquery is
# never turned into a join that would read the whole table).
_CONFLICTS = """
INSERT INTO conflicts (id, stored, received)
SELECT DISTINCT id, stored, received FROM (
    SELECT i.id, i.body AS received, (SELECT r.body FROM readings r WHERE r.id = i.id) AS stored
    FROM incoming_reading i
) pairs
WHERE (stored - 'ts' - 'clock') <> (received - 'ts' - 'clock')
ON CONFLICT DO NOTHING
"""
# seq_ranges gets about one row per batch; now and then one worker (the
# advisory lock) replaces the rows it can see by their merged ranges. Rows
# that other workers commit meanwhile are not seen, so not deleted: nothing
# is lost, they are merged the next time.
_COMPACT = """
WITH gone AS (
    DELETE FROM seq_ranges RETURNING site, gateway, epoch, lo, hi
), starts AS (
    SELECT site, gateway, epoch, lo, hi,
           CASE WHEN lo <= max(hi) OVER (
                    PARTITION BY site, gateway, epoch ORDER BY lo, hi
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1
                THEN 0 ELSE 1 END AS start
    FROM gone
), runs AS (
    SELECT site, gateway, epoch, lo, hi,
           sum(start) OVER (PARTITION BY site, gateway, epoch ORDER BY lo, hi) AS run
    FROM starts
)
INSERT INTO seq_ranges (site, gateway, epoch, lo, hi)
SELECT site, gateway, epoch, min(lo), max(hi) FROM runs GROUP BY site, gateway, epoch, run
"""
# Latest arrival wins: a gateway's statuses are seconds apart, and the will
# carries the ``at`` of its connect, so ``at`` cannot order it (README).
_STATUS = """
INSERT INTO gateway_status (site, gateway, state, at, body) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (site, gateway) DO UPDATE SET state = EXCLUDED.state, at = EXCLUDED.at,
    body = EXCLUDED.body, received_at = now()
"""
# Two workers can commit a gate's states out of order (each holds a group for
# a moment): an older ``at`` seconds behind the stored one is such a reorder
# and must not undo the newer state, or the reconciler plans from a stale
# version or digest. A higher version always wins, and an ``at`` far behind
# (a clock set back, a reinstalled gate) is taken as the gate's new truth.
_ACCESS_STATE = """
INSERT INTO access_state (site, gateway, version, digest, at, body) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (site, gateway) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest,
    at = EXCLUDED.at, body = EXCLUDED.body, received_at = now()
WHERE EXCLUDED.version > access_state.version OR EXCLUDED.at >= access_state.at
    OR EXCLUDED.at < access_state.at - interval '5 minutes'
"""
_RESULT = """
INSERT INTO command_results (id, site, gateway, body) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""
_REJECTED = "INSERT INTO rejected (routing_key, reason, body) VALUES (%s, %s, %s)"


@dataclass(slots=True)
class _Group:
    readings: list[str] = field(default_factory=list)  # incoming_reading rows, COPY text
    ids: set[str] = field(default_factory=set)
    repeats: int = 0  # rows whose id came earlier in the group
    seqs: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    statuses: list[tuple[object, ...]] = field(default_factory=list)
    access: list[tuple[object, ...]] = field(default_factory=list)
    results: list[tuple[object, ...]] = field(default_factory=list)
    rejected: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PreparedGroup:
    """Messages decoded and formatted for COPY: all of a group's CPU work, no I/O."""

    messages: Sequence[tuple[str, bytes]]
    group: _Group
    counts: IngestCounts


def prepare(messages: Sequence[tuple[str, bytes]]) -> PreparedGroup:
    """Decode ``(routing_key, body)`` messages (the worker runs it while the previous
    group commits); a message that cannot be read is kept for ``rejected``."""
    group, counts = _decode(messages)
    # Each row starts with its id and a tab: sorted rows are in id order.
    group.readings.sort()
    return PreparedGroup(messages, group, counts)


class IngestStore:
    """One worker's database side; owns its connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._prepared = False

    async def commit(self, messages: Sequence[tuple[str, bytes]]) -> IngestCounts:
        """``write(prepare(messages))``."""
        return await self.write(prepare(messages))

    async def compact_ranges(self) -> bool:
        """Merge ``seq_ranges`` rows; False when another worker is doing it."""
        async with self._conn.transaction():
            cur = await self._conn.execute("SELECT pg_try_advisory_xact_lock(7213)")
            row = await cur.fetchone()
            if row is None or not row[0]:
                return False
            await self._conn.execute(_COMPACT)
        return True

    async def write(self, prepared: PreparedGroup) -> IngestCounts:
        """Write a prepared group in one transaction; returns once committed.

        Raises:
            psycopg.Error: the database failed (after retrying deadlocks);
                nothing of the group is committed then.
        """
        messages, group, counts = prepared.messages, prepared.group, prepared.counts
        try:
            await self._write_retrying(group)
        except errors.DataError:
            # Something PostgreSQL cannot take (a \u0000, a 30 February):
            # find the message, keep it aside, never block the queue on it.
            _LOGGER.warning("ingest: a group failed on its data; writing it message by message")
            for key, body in messages:
                try:
                    await self._write_retrying(prepare([(key, body)]).group)
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
            await conn.execute(_STAGE)
            await conn.commit()
            self._prepared = True
        async with conn.transaction(), conn.cursor() as cur:
            if group.readings:
                await self._stage(cur, group.readings)
                await cur.execute(_INSERT_READINGS)
                if group.repeats or cur.rowcount < len(group.readings):
                    await cur.execute(_CONFLICTS)  # rare: redeliveries and resends
                await cur.execute(_INSERT_ALARMS)
                await self._add_ranges(cur, group.seqs)
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

    async def _add_ranges(
        self, cur: psycopg.AsyncCursor[Any], seqs: dict[tuple[str, str, str], list[int]]
    ) -> None:
        # Every staged seq is in readings now (inserted here or stored before).
        async with cur.copy(_RANGES_COPY) as copy:
            for key, some in seqs.items():
                for lo, hi in islands(some):
                    await copy.write_row((*key, lo, hi))

    async def _stage(self, cur: psycopg.AsyncCursor[Any], rows: list[str]) -> None:
        async with cur.copy(_STAGE_COPY) as copy:
            await copy.write("".join(rows).encode())


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
                _add_readings(group, where, batch)
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


def _add_readings(group: _Group, where: Route, batch: WireBatch) -> None:
    group.seqs.setdefault((where.site, where.gateway, batch.epoch), []).extend(
        r.seq for r in batch.readings
    )
    # COPY text by hand: psycopg's write_row took a third of the worker's CPU.
    # ts and sent_at are in the contract's form or NULL: nothing to escape.
    tail = "\t".join((_text(where.site), _text(where.gateway), _text(batch.epoch)))
    tail = f"\t{tail}\t{batch.sent_at or _NULL}"
    first, again = f"{tail}\tf\n", f"{tail}\tt\n"
    ids, rows = group.ids, group.readings
    for r in batch.readings:
        if r.id in ids:
            group.repeats += 1
            end = again
        else:
            ids.add(r.id)
            end = first
        rows.append(
            f"{_text(r.id)}\t{r.seq}\t{_text(r.type)}\t{_text(r.priority)}\t"
            f"{r.ts or _NULL}\t{_text(r.body)}{end}"
        )


_NULL = "\\N"


def _text(value: str) -> str:
    """``value`` escaped for COPY's text format (JSON may hold a backslash or whitespace)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        value = value.replace("\r", "\\r")
    return value


def _json(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
