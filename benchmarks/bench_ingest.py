"""Ingest throughput: readings/s committed to PostgreSQL by 1, 2 and 4 workers.

A synthetic publisher stands in for 1,000 gateways: contract-exact batch
envelopes (``batch`` readings each, one epoch per gateway, seqs gapless) are
published through the 3-node RabbitMQ cluster into the ingest quorum queue
*before* the workers start, so the figure is the workers' (and the queue's
and database's) rate, not the publisher's. Then N real ``estate-central
ingest`` processes start, and the clock runs from their start until
PostgreSQL holds every reading; ``report`` must then find every epoch
complete. Target: >= 50,000 readings/s with 2 workers (issue 12). Both write
modes (COPY into a temporary table, or batched INSERT) are measured.

    .venv/bin/python -m benchmarks.bench_ingest [--readings 200000] [--workers 1,2,4]
        [--modes copy,insert] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import aio_pika
import psycopg

from benchmarks.common import temp_dir
from central import amqp
from central.report import build_report
from tests.cluster import RabbitCluster
from tests.fleet.processes import CentralProcess, ingest_worker
from tests.fleet.wire import batch, reading
from tests.postgres import Postgres

TARGET = 50_000
GATEWAYS = 1000


async def fill(urls: list[str], queue: str, site: str, readings: int, per_batch: int) -> float:
    """Publish ``readings`` in batches spread over 1,000 gateways; return seconds taken."""
    conn, _ = await amqp.connect(urls)
    started = time.monotonic()
    async with conn:
        channel = await conn.channel()
        await amqp.declare_ingest(channel, queue_name=queue, site=site)
        exchange = await channel.get_exchange(amqp.EXCHANGE, ensure=False)
        per_gateway = readings // GATEWAYS
        pending = []
        for start in range(1, per_gateway + 1, per_batch):
            for g in range(GATEWAYS):
                gw = f"gw-{g:04d}"
                body = batch(
                    site,
                    gw,
                    "e1",
                    [
                        reading(gw, "e1", s)
                        for s in range(start, min(start + per_batch, per_gateway + 1))
                    ],
                )
                pending.append(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=f"estates.{site}.gateways.{gw}.readings",
                    )
                )
                if len(pending) >= 200:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    return time.monotonic() - started


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


async def one_run(
    workdir: Path,
    cluster: RabbitCluster,
    pg: Postgres,
    *,
    workers: int,
    mode: str,
    readings: int,
    per_batch: int,
) -> float:
    site = f"b{os.urandom(3).hex()}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {site}")
    dsn = pg.dsn.replace("dbname=estate", f"dbname={site}")
    queue = f"bench-{site}"
    total = (readings // GATEWAYS) * GATEWAYS
    fill_s = await fill(cluster.amqp_urls, queue, site, total, per_batch)
    procs: list[CentralProcess] = []
    for i in range(workers):
        urls = cluster.amqp_urls[i % 3 :] + cluster.amqp_urls[: i % 3]
        proc = ingest_worker(
            workdir / f"{site}-w{i}.log",
            dsn,
            urls,
            queue=queue,
            site=site,
            prefetch=2000,
            group_max=200,
        )
        proc.args = ("--log-level", "WARNING", *proc.args, "--write", mode)
        procs.append(proc)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    try:
        while count(dsn) < total:
            await asyncio.sleep(0.2)
            for proc in procs:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited: {proc.output()[-2000:]}")
            if time.monotonic() - started > 600:
                raise TimeoutError(f"only {count(dsn)} of {total} after 600 s")
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.kill()
    with psycopg.connect(dsn) as conn:
        report = build_report(conn)
    assert len(report.epochs) == GATEWAYS and report.complete, "report not complete"
    rate = total / elapsed
    print(
        f"workers={workers} mode={mode} readings={total} batch={per_batch} "
        f"publish={total / fill_s:,.0f}/s  ingest={elapsed:.1f} s = {rate:,.0f} readings/s "
        f"({rate / TARGET:.2f}x target)",
        flush=True,
    )
    return rate


async def main_async(args: argparse.Namespace) -> None:
    with temp_dir("bench-ingest-") as tmp:
        workdir = Path(tmp)
        cluster = RabbitCluster(workdir / "cluster")
        pg = Postgres()
        try:
            cluster.start()
            pg.start()
            for mode in args.modes.split(","):
                for workers in (int(w) for w in args.workers.split(",")):
                    rates = [
                        await one_run(
                            workdir,
                            cluster,
                            pg,
                            workers=workers,
                            mode=mode,
                            readings=args.readings,
                            per_batch=args.batch,
                        )
                        for _ in range(args.runs)
                    ]
                    median = statistics.median(rates)
                    print(
                        f"median workers={workers} mode={mode}: {median:,.0f} readings/s "
                        f"({median / TARGET:.2f}x the {TARGET:,}/s target)",
                        flush=True,
                    )
        finally:
            cluster.stop()
            pg.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="readings per batch envelope")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--modes", default="copy,insert")
    parser.add_argument("--runs", type=int, default=1)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
