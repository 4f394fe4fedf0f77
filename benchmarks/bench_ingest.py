"""Ingest throughput: readings/s committed to PostgreSQL by 1, 2 and 4 workers.

A synthetic publisher stands in for 1,000 gateways: contract-exact batch
envelopes (``batch`` readings each, one epoch per gateway, seqs gapless) are
published through the 3-node RabbitMQ cluster into the ingest quorum queue
*before* the workers start, so the figure is the workers' (and the queue's
and database's) rate, not the publisher's. Then N real ``estate-central
ingest`` processes start, and the clock runs until PostgreSQL holds every
reading; ``report`` must then find every epoch complete. Two rates are
printed: from the workers' start (Python start-up, connect and declare
included: about a second, which weighs on 100,000 readings), and from the
start of the first transaction (PostgreSQL's ``received_at``) on, the rate
the workers sustain. Target: >= 50,000 readings/s with 2 workers (issue 12).

Each worker takes ``--prefetch`` messages (default: three groups: one
committing, one prepared, one arriving). More than the queue holds divided by
the workers would let the first worker up take everything, so by default a
group is made smaller when the workers' three groups would not fit in the
queue (1,000 messages: 200 for 1 worker, 166 for 2, 83 for 4). The CPU time that
the workers, PostgreSQL (every backend) and the three RabbitMQ nodes spent
during the run is printed per reading: on the shared 2-core machine that, not
the wall clock, says which part is the limit.

    .venv/bin/python -m benchmarks.bench_ingest [--readings 200000] [--workers 1,2,4]
        [--runs 1] [--group-max 200] [--prefetch 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import psycopg

from benchmarks.common import bench_parser, cpu_seconds, temp_dir
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


def count(conn: psycopg.Connection[Any]) -> int:
    try:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def first_transaction(dsn: str) -> float:
    """Wall-clock time the first committed group's transaction started."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT extract(epoch FROM min(received_at)) FROM readings").fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and every descendant, reaped children included."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(child for child, up in parent.items() if up == pid)
    total = 0.0
    for pid in seen:
        with contextlib.suppress(OSError, IndexError):
            fields = (Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass(frozen=True, slots=True)
class Run:
    from_start: float  # readings/s, the workers' start-up included
    steady: float  # readings/s from the first transaction on


async def one_run(
    workdir: Path,
    cluster: RabbitCluster,
    pg: Postgres,
    args: argparse.Namespace,
    *,
    workers: int,
) -> Run:
    site = f"b{os.urandom(3).hex()}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {site}")
    dsn = pg.dsn.replace("dbname=estate", f"dbname={site}")
    queue = f"bench-{site}"
    total = (args.readings // GATEWAYS) * GATEWAYS
    fill_s = await fill(cluster.amqp_urls, queue, site, total, args.batch)
    group_max = args.group_max
    if not args.prefetch:  # three groups each, and no worker holding another's share
        group_max = max(1, min(group_max, -(-total // args.batch) // (3 * workers)))
    prefetch = args.prefetch or 3 * group_max
    procs: list[CentralProcess] = []
    for i in range(workers):
        urls = cluster.amqp_urls[i % 3 :] + cluster.amqp_urls[: i % 3]
        proc = ingest_worker(
            workdir / f"{site}-w{i}.log",
            dsn,
            urls,
            queue=queue,
            site=site,
            prefetch=prefetch,
            group_max=group_max,
        )
        proc.args = ("--log-level", "WARNING", *proc.args)
        procs.append(proc)
    postgres = [int((pg.data / "postmaster.pid").read_text().split()[0])]
    brokers = [node.proc.pid for node in cluster.nodes if node.proc is not None]
    # The polling's own CPU (a count over the growing table) is not the ingest's.
    watch = psycopg.connect(dsn, autocommit=True)
    cpu_pg, cpu_mq = tree_cpu(postgres), tree_cpu(brokers)
    cpu_watch = cpu_seconds(watch.info.backend_pid)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    pids = [p.proc.pid for p in procs if p.proc is not None]
    cpu_first = 0.0  # the workers' CPU when the first group was seen: start-up, mostly
    try:
        while (seen := count(watch)) < total:
            if not seen:
                cpu_first = tree_cpu(pids)
            await asyncio.sleep(0.05)
            for proc in procs:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited: {proc.output()[-2000:]}")
            if time.monotonic() - started > 600:
                raise TimeoutError(f"only {seen} of {total} after 600 s")
        elapsed, ended_wall = time.monotonic() - started, time.time()
        cpu_workers = tree_cpu(pids)
        cpu_watch = cpu_seconds(watch.info.backend_pid) - cpu_watch
        cpu_pg = tree_cpu(postgres) - cpu_pg - cpu_watch
        cpu_mq = tree_cpu(brokers) - cpu_mq
    finally:
        watch.close()
        for proc in procs:
            proc.kill()
    with psycopg.connect(dsn) as conn:
        report = build_report(conn)
    assert len(report.epochs) == GATEWAYS and report.complete, "report not complete"
    run = Run(total / elapsed, total / (ended_wall - first_transaction(dsn)))
    startup = elapsed - total / run.steady

    def us(seconds: float) -> str:
        return f"{seconds / total * 1e6:.1f}"

    print(
        f"workers={workers} readings={total} batch={args.batch} group={group_max} "
        f"prefetch={prefetch} "
        f"publish={total / fill_s:,.0f}/s  ingest={elapsed:.1f} s = {run.from_start:,.0f} "
        f"readings/s from start; {run.steady:,.0f}/s after the first {startup:.1f} s "
        f"({run.steady / TARGET:.2f}x target); CPU us/reading: workers {us(cpu_workers)} "
        f"({us(cpu_workers - cpu_first)} after start-up), postgres {us(cpu_pg)}, "
        f"rabbitmq {us(cpu_mq)}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return run


async def main_async(args: argparse.Namespace) -> None:
    with temp_dir("bench-ingest-") as tmp:
        workdir = Path(tmp)
        cluster = RabbitCluster(workdir / "cluster")
        pg = Postgres()
        try:
            cluster.start()
            pg.start()
            for workers in (int(w) for w in args.workers.split(",")):
                runs = [
                    await one_run(workdir, cluster, pg, args, workers=workers)
                    for _ in range(args.runs)
                ]
                start = statistics.median(r.from_start for r in runs)
                steady = statistics.median(r.steady for r in runs)
                print(
                    f"median of {len(runs)} workers={workers}: {steady:,.0f} readings/s "
                    f"after start-up ({steady / TARGET:.2f}x the {TARGET:,}/s target), "
                    f"{start:,.0f} readings/s from start",
                    flush=True,
                )
        finally:
            cluster.stop()
            pg.remove()


def main() -> None:
    parser = bench_parser(__doc__, runs=1)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="readings per batch envelope")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--group-max", type=int, default=200, help="messages per transaction")
    parser.add_argument(
        "--prefetch", type=int, default=0, help="messages per worker (default: 3 groups)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
