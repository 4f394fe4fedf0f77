"""Ingest workers on a real RabbitMQ cluster into a real PostgreSQL (issue 12)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from central.report import build_report
from central.schema import migrate
from central.store import IngestStore
from gateway.timefmt import rfc3339
from tests.cluster import RabbitCluster
from tests.fleet.processes import CentralProcess, ingest_worker
from tests.fleet.wire import batch, dropped, reading

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def publish(port: int, items: list[tuple[str, bytes]], *, pause_s: float = 0.0) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"pub-{time.monotonic_ns()}",
        protocol=aiomqtt.ProtocolVersion.V311,
    ) as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)
            if pause_s:
                await asyncio.sleep(pause_s)


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


async def wait_db(dsn: str, sql: str, expected: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = count(dsn, sql)
        except psycopg.errors.UndefinedTable:
            got = -1
        if got == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sql}: {got}, expected {expected}")


async def start_workers(
    workdir: Path, rabbit: RabbitCluster, dsn: str, site: str, n: int = 2, **kw: int
) -> list[CentralProcess]:
    urls = rabbit.amqp_urls
    workers = []
    for i in range(n):
        order = urls[i % len(urls) :] + urls[: i % len(urls)]
        worker = ingest_worker(
            workdir / f"worker{i}.log", dsn, order, queue=f"ingest-{site}", site=site, **kw
        )
        worker.start()
        workers.append(worker)
    for worker in workers:
        await worker.wait_for_log("ingest consuming", 60)
    return workers


async def test_two_workers_dedupe_keep_conflicts_and_report_gaps(
    rabbit: RabbitCluster, dsn: str, site: str, workdir: Path
) -> None:
    workers = await start_workers(workdir, rabbit, dsn, site, prefetch=5, group_max=3)
    try:
        listed = rabbit.ctl(0, "list_consumers", "queue_name").split()
        assert listed.count(f"ingest-{site}") == 2  # two competing consumers
        root = f"estates/{site}/gateways/g1"
        first = batch(site, "g1", "e1", [reading("g1", "e1", s) for s in range(1, 5)])
        items = [(f"{root}/readings", first), (f"{root}/readings", first)]  # a redelivery
        items.append((f"{root}/alarms", batch(site, "g1", "e1", [dropped("g1", "e1", 10, 7, 9)])))
        for lo in range(11, 201, 10):
            items.append(
                (
                    f"{root}/readings",
                    batch(site, "g1", "e1", [reading("g1", "e1", s) for s in range(lo, lo + 10)]),
                )
            )
        fever = reading(
            "g1",
            "e1",
            201,
            priority="alarm",
            data={"celsius": 38.4, "threshold": 37.3, "fever": True},
        )
        items.append((f"{root}/alarms", batch(site, "g1", "e1", [fever])))
        # Same id, another body: a conflict. Same id, only ts corrected: not one.
        other = reading("g1", "e1", 3, data={"celsius": 39.9, "threshold": 37.3, "fever": True})
        resent = reading("g1", "e1", 4, ts=time.time() + 60)
        items.append((f"{root}/readings", batch(site, "g1", "e1", [other, resent])))
        # A reading PostgreSQL cannot take (30 February passes the pattern, not
        # the cast): that message is kept aside, the rest of its group lands.
        poison = reading("g1", "e1", 300) | {"ts": "2026-02-30T10:00:00.000Z"}
        items.append((f"{root}/readings", batch(site, "g1", "e1", [poison])))
        status = {
            "v": 1,
            "state": "online",
            "version": "x",
            "started_at": rfc3339(time.time()),
            "at": rfc3339(time.time()),
        }
        items.append((f"{root}/status", json.dumps(status).encode()))
        await publish(rabbit.nodes[1].mqtt_port, items)

        await wait_db(dsn, "SELECT count(*) FROM readings", 4 + 192)
        await wait_db(dsn, "SELECT count(*) FROM conflicts", 1)
        await wait_db(dsn, "SELECT count(*) FROM gateway_status WHERE state = 'online'", 1)
        await wait_db(dsn, "SELECT count(*) FROM rejected WHERE reason LIKE 'database:%'", 1)
        assert count(dsn, "SELECT count(*) FROM alarms") == 2
        with psycopg.connect(dsn) as conn:
            report = build_report(conn)
        [epoch] = report.epochs
        assert (epoch.gateway, epoch.epoch, epoch.last_seq) == ("g1", "e1", 201)
        assert epoch.missing == ((5, 6),)
        assert epoch.explained == ((7, 9),)
        assert [c[0] for c in report.conflicts] == ["g1:e1:3"]
        assert not report.complete
    finally:
        for worker in workers:
            worker.kill()


async def test_worker_killed_mid_stream_loses_nothing(
    rabbit: RabbitCluster, dsn: str, site: str, workdir: Path
) -> None:
    workers = await start_workers(workdir, rabbit, dsn, site, prefetch=40, group_max=10)
    try:
        root = f"estates/{site}/gateways/g2"
        total_batches, per_batch = 300, 20
        items = [
            (
                f"{root}/readings",
                batch(
                    site,
                    "g2",
                    "e2",
                    [reading("g2", "e2", b * per_batch + i + 1) for i in range(per_batch)],
                ),
            )
            for b in range(total_batches)
        ]
        publisher = asyncio.create_task(publish(rabbit.nodes[2].mqtt_port, items, pause_s=0.01))
        deadline = time.monotonic() + 60
        while count(dsn, "SELECT count(*) FROM readings") < 500:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        workers[0].kill()
        at_kill = count(dsn, "SELECT count(*) FROM readings")
        assert at_kill < total_batches * per_batch  # really mid-stream
        await publisher
        await wait_db(dsn, "SELECT count(*) FROM readings", total_batches * per_batch)
        with psycopg.connect(dsn) as conn:
            report = build_report(conn)
        [epoch] = report.epochs
        assert epoch.complete and epoch.last_seq == total_batches * per_batch
        assert report.complete
    finally:
        for worker in workers:
            worker.kill()


def test_a_database_from_before_seq_ranges_gets_them_from_its_readings(dsn: str) -> None:
    # The layout before seq_ranges: readings only, with the index report used.
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE readings (id text PRIMARY KEY, site text NOT NULL,"
            " gateway text NOT NULL, epoch text NOT NULL, seq bigint NOT NULL,"
            " type text NOT NULL, priority text NOT NULL, ts timestamptz,"
            " body jsonb NOT NULL, sent_at timestamptz,"
            " received_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("CREATE INDEX readings_by_seq ON readings (site, gateway, epoch, seq)")
        for gw, seq in [("g1", s) for s in (1, 2, 3, 6, 7)] + [("g2", 4)]:
            conn.execute(
                "INSERT INTO readings (id, site, gateway, epoch, seq, type, priority, body)"
                " VALUES (%s, 's', %s, 'e1', %s, 't', 'routine', '{}')",
                (f"{gw}:e1:{seq}", gw, seq),
            )
        conn.commit()
        migrate(conn)
        migrate(conn)  # a second worker: nothing more
        report = build_report(conn)
        index = conn.execute("SELECT to_regclass('readings_by_seq')").fetchone()
    assert index == (None,)
    g1, g2 = report.epochs
    assert (g1.ranges, g1.received, g1.missing) == (((1, 3), (6, 7)), 5, ((4, 5),))
    assert (g2.ranges, g2.received, g2.missing) == (((4, 4),), 1, ((1, 3),))


async def test_bodies_with_escapes_and_whitespace_are_stored_as_sent(dsn: str) -> None:
    # A gateway may pretty-print (tabs, newlines) and escape (backslash,
    # quotes, unicode): COPY's text format must carry all of it.
    odd = reading("g1", "e1", 1, data={"note": 'tab\there\nnew "q" back\\slash \u00e9 \\N'})
    pretty = json.dumps(
        {
            "v": 1,
            "site": "s",
            "gateway": "g1",
            "epoch": "e1",
            "sent_at": odd["ts"],
            "readings": [odd],
        },
        indent="\t",
    )
    changed = batch("s", "g1", "e1", [odd | {"data": {"note": "other"}}])
    key = "estates.s.gateways.g1.readings"
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        with psycopg.connect(dsn) as conn:
            migrate(conn)
        group = [(key, pretty.encode()), (key, pretty.encode()), (key, changed)]
        counts = await IngestStore(db).commit(group)
    assert (counts.readings, counts.rejected) == (3, 0)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, seq, body FROM readings").fetchall()
        conflicts = count(dsn, "SELECT count(*) FROM conflicts")
        report = build_report(conn)
    assert rows == [("g1:e1:1", 1, odd)]  # the first copy is stored
    assert conflicts == 1  # the same reading twice is none; another body is one
    assert report.epochs[0].ranges == ((1, 1),)


async def test_seq_ranges_compact_to_the_same_report(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        migrate(conn)
        spans = [(1, 10), (11, 20), (5, 8), (30, 40), (41, 41), (50, 50), (45, 49), (60, 60)]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO seq_ranges VALUES ('s', %s, 'e1', %s, %s)",
                [(gw, lo, hi) for gw in ("g1", "g2") for lo, hi in spans],
            )
        conn.commit()
        before = build_report(conn)
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        assert await IngestStore(db).compact_ranges()
    with psycopg.connect(dsn) as conn:
        after = build_report(conn)
        rows = conn.execute(
            "SELECT gateway, lo, hi FROM seq_ranges ORDER BY gateway, lo"
        ).fetchall()
    assert after == before
    merged = [(1, 20), (30, 41), (45, 50), (60, 60)]
    assert rows == [(gw, lo, hi) for gw in ("g1", "g2") for lo, hi in merged]


def access_state(version: int, digest: str, at: float) -> bytes:
    state = {"v": 1, "version": version, "cards": 1, "digest": digest, "at": rfc3339(at)}
    return json.dumps(state | {"pending": None, "ignored": 0, "last_error": None}).encode()


async def test_a_gates_older_access_state_committed_late_does_not_undo_the_newer(
    dsn: str,
) -> None:
    # Two workers may commit one gate's states out of order; the reconciler
    # must keep planning from the newest (central/store.py, _ACCESS_STATE).
    key = "estates.s.gateways.g1.access.state"
    now = time.time()
    steps = [
        (access_state(2, "b" * 64, now), "b"),  # the newest, committed first
        (access_state(2, "a" * 64, now - 2), "b"),  # an older one, late: ignored
        (access_state(3, "c" * 64, now - 3), "c"),  # a higher version wins anyway
        (access_state(1, "d" * 64, now - 3600), "d"),  # far behind: a clock set back
    ]
    async with await psycopg.AsyncConnection.connect(dsn) as db:
        with psycopg.connect(dsn) as conn:
            migrate(conn)
        store = IngestStore(db)
        for body, held in steps:
            await store.commit([(key, body)])
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT digest FROM access_state").fetchone()
            assert row == (held * 64,)
