"""Access at fleet scale: revoke one card in PostgreSQL, time until every gateway decides with it.

A 3-node RabbitMQ cluster, PostgreSQL, 2 ingest workers and the reconciler
(``estate-central reconcile``) run as real processes, and ``--gates`` real
gateway daemons (``python -m gateway run``, each with its own data_dir,
``access.source: platform``, no devices) spread over the three nodes with
failover lists (tests/fleet/gateways.py, shared with bench_fleet). A gateway
decides with a version once it logs ``access list changed: ... to=VERSION``:
the store has committed it and the doors' next lookup uses it (its
``access/state`` follows). Times are from the revoke's commit to that log
line (wall clock, ms): the path is PostgreSQL NOTIFY, the reconciler's delta
over AMQP, the cluster, the gateway's MQTT session, verify and apply.

The list has ``--cards`` cards (one snapshot to every gate); then
``--rounds`` revokes, each timed on every gate (target p99 <= 5 s while
connected). Then two gates go away: one is SIGKILLed, one has its network
cut (a TCP proxy, as in bench_fleet); a card is revoked meanwhile, the others
converge, and the time each absent gate takes to converge after it returns
is printed.

    .venv/bin/python -m benchmarks.bench_access_fleet [--gates 40] [--cards 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import psycopg

from benchmarks.common import log_lines, percentile, temp_dir
from central.cards import revoke
from gateway.cli.operator_tools import keygen
from tests.cluster import RabbitCluster
from tests.daemon import Daemon
from tests.fleet.gateways import CuttableProxy, gateway_config, spread, start_all
from tests.fleet.processes import CentralProcess, ingest_worker
from tests.postgres import Postgres

SITE = "estate"
KEY_ID = "platform"
TARGET_P99_S = 5.0
WAIT_S = 180.0
STOPPED, CUT = 2, 1  # the gates that go away: one SIGKILLed, one cut off


def applied(version: int) -> str:
    """The gateway's log text once it decides with ``version`` (gateway/access/processor.py)."""
    return f" to={version} upserts="


async def applied_at(daemon: Daemon, version: int) -> float:
    """Wall time (from the daemon's log) at which it applied ``version``."""
    needle = applied(version)
    await daemon.wait_for_log(needle, WAIT_S)
    return log_lines(daemon.output(), needle)[0][0]


async def until_all(daemons: list[Daemon], version: int, since: float) -> list[float]:
    stamps = await asyncio.gather(*(applied_at(d, version) for d in daemons))
    return [stamp - since for stamp in stamps]


async def run_cli(workdir: Path, name: str, *args: str) -> None:
    proc = CentralProcess(workdir / f"{name}.log", *args)
    proc.start()
    code = await asyncio.to_thread(proc.wait, 120)
    if code != 0:
        raise RuntimeError(proc.output())


def revoke_now(dsn: str, card: str) -> tuple[float, int]:
    """Revoke ``card`` (what ``estate-central cards revoke`` runs): commit time and new version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ((_site, version),) = revoke(conn, card)
        return time.time(), version


def summary(label: str, times: list[float]) -> str:
    p99 = percentile(times, 99)
    return (
        f"{label}: p50 {percentile(times, 50):.2f} s, p99 {p99:.2f} s, max {max(times):.2f} s "
        f"(target p99 <= {TARGET_P99_S:.0f} s: {p99 / TARGET_P99_S:.2f}x)"
    )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    cluster = RabbitCluster(workdir / "cluster")
    pg = Postgres()
    procs: list[CentralProcess] = []
    daemons: list[Daemon] = []
    proxies: list[CuttableProxy] = []
    try:
        cluster.start()
        pg.start()
        key_id, _, public_b64 = keygen(workdir / "keys", key_id=KEY_ID).partition(": ")
        urls = cluster.amqp_urls
        for i in range(2):
            procs.append(
                ingest_worker(
                    workdir / f"w{i}.log",
                    pg.dsn,
                    spread(urls, i),
                    queue="access-ingest",
                    site=SITE,
                )
            )
        procs.append(
            CentralProcess(
                workdir / "reconcile.log",
                "reconcile",
                "--db",
                pg.dsn,
                "--amqp",
                ",".join(urls),
                "--key",
                str(workdir / "keys" / f"{KEY_ID}.pem"),
                "--key-id",
                key_id,
            )
        )
        for proc in procs:
            proc.start()
        await procs[-1].wait_for_log("reconciler listening", 120)
        for proc in procs[:2]:
            await proc.wait_for_log("ingest consuming", 120)

        proxies = [CuttableProxy(node.mqtt_port) for node in cluster.nodes]
        for proxy in proxies:
            await proxy.start()
        for g in range(args.gates):
            name = f"gate-{g:02d}"
            brokers = [p.url for p in proxies] if g == CUT else spread(cluster.mqtt_urls, g)
            config = gateway_config(
                workdir / name / "config.yaml",
                site=SITE,
                gateway=name,
                brokers=brokers,
                devices=[],
                gateway_extra={"timezone": "Asia/Shanghai"},
                commands={"public_keys": {key_id: public_b64}},
                access={"source": "platform", "key_ids": [key_id]},
            )
            daemons.append(Daemon(config))
        await start_all(daemons)
        print(f"{len(daemons)} gateways connected", flush=True)

        cards = [{"card": f"04{n:08X}", "holder": f"r-{n}"} for n in range(1, args.cards + 1)]
        listing = workdir / "cards.json"
        listing.write_text(json.dumps({"profiles": {}, "cards": cards}))
        since = time.time()
        await run_cli(
            workdir, "import", "cards", "import", str(listing), "--site", SITE, "--db", pg.dsn
        )
        first = await until_all(daemons, 1, since)
        print(
            f"first list ({args.cards} cards, snapshots) on {len(daemons)} gates: "
            f"p50 {percentile(first, 50):.2f} s, max {max(first):.2f} s",
            flush=True,
        )

        revoked = iter(cards)
        every: list[float] = []
        for n in range(1, args.rounds + 1):
            since, version = await asyncio.to_thread(revoke_now, pg.dsn, next(revoked)["card"])
            times = await until_all(daemons, version, since)
            every += times
            print(summary(f"revoke {n} (version {version}) on {len(daemons)} gates", times))
        print(summary(f"all {args.rounds} revokes, {len(every)} gate-updates", every), flush=True)

        stopped, cut = daemons[STOPPED], daemons[CUT]
        stopped.kill()
        for proxy in proxies:
            proxy.sever()
        since, version = await asyncio.to_thread(revoke_now, pg.dsn, next(revoked)["card"])
        present = [d for d in daemons if d not in (stopped, cut)]
        others = await until_all(present, version, since)
        print(summary("revoke with 2 gates away, the others", others))
        await asyncio.sleep(args.away)
        back = time.time()
        stopped.start()
        for proxy in proxies:
            proxy.mend()
        away = (("SIGKILLed and restarted", stopped), ("network cut and mended", cut))
        for label, daemon in away:
            took = await applied_at(daemon, version) - back
            print(f"gate {label} after {args.away:.0f} s away: converged {took:.2f} s after return")
    finally:
        for daemon in daemons:
            daemon.stop()
        for proc in procs:
            proc.kill()
        for proxy in proxies:
            await proxy.stop()
        cluster.stop()
        pg.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=40)
    parser.add_argument("--cards", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="revokes timed while connected")
    parser.add_argument("--away", type=float, default=30.0, help="seconds the 2 gates are away")
    args = parser.parse_args()
    with temp_dir("bench-access-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
