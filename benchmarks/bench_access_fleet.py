"""Access at fleet scale: revoke one card in PostgreSQL, time until every gate holds the new list.

A 3-node RabbitMQ cluster, PostgreSQL, 2 ingest workers and the reconciler
run as real processes; the 40 gates are contract gates
(tests/fleet/access_gate.py: verify the signature, apply deltas and
snapshots, publish ``access/state``), spread over the three nodes, because
the gateway's own access-list side was not on main when this was written.
The list has ``--cards`` cards; after every gate holds it, one card is
revoked in PostgreSQL (``central.cards.revoke``, what ``estate-central cards
revoke`` runs) and the time from the revoke to each gate applying the new
version is measured (target p99 <= 5 s
while connected). Then one gate goes away, another card is revoked, and the
time for the returning gate to converge is measured.

    .venv/bin/python -m benchmarks.bench_access_fleet [--gates 40] [--cards 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path

import psycopg

from benchmarks.common import percentile, temp_dir
from central.cards import revoke
from gateway.cli.operator_tools import keygen
from tests.cluster import RabbitCluster
from tests.fleet.access_gate import AccessGate
from tests.fleet.processes import CentralProcess, ingest_worker
from tests.postgres import Postgres

SITE = "estate"
TARGET_P99_S = 5.0


async def run_cli(workdir: Path, name: str, *args: str) -> None:
    proc = CentralProcess(workdir / f"{name}.log", *args)
    proc.start()
    code = await asyncio.to_thread(proc.wait, 120)
    if code != 0:
        raise RuntimeError(proc.output())


async def until_all(gates: list[AccessGate], version: int, started: float) -> list[float]:
    async def one(gate: AccessGate) -> float:
        await gate.wait_version(version, timeout=120)
        return time.monotonic() - started

    return list(await asyncio.gather(*(one(g) for g in gates)))


async def run(args: argparse.Namespace, workdir: Path) -> None:
    cluster = RabbitCluster(workdir / "cluster")
    pg = Postgres()
    procs: list[CentralProcess] = []
    gates: list[AccessGate] = []
    try:
        cluster.start()
        pg.start()
        key_id, _, public_b64 = keygen(workdir / "keys", key_id="platform").partition(": ")
        urls = cluster.amqp_urls
        for i in range(2):
            procs.append(
                ingest_worker(
                    workdir / f"w{i}.log",
                    pg.dsn,
                    urls[i:] + urls[:i],
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
                str(workdir / "keys" / "platform.pem"),
                "--key-id",
                key_id,
            )
        )
        for proc in procs:
            proc.start()
        await procs[-1].wait_for_log("reconciler listening", 120)
        for proc in procs[:2]:
            await proc.wait_for_log("ingest consuming", 120)
        public = base64.b64decode(public_b64)
        gates = [
            AccessGate(cluster.nodes[g % 3].mqtt_port, SITE, f"gate-{g:02d}", public)
            for g in range(args.gates)
        ]
        for gate in gates:
            await gate.start()
        cards = [{"card": f"04{n:08X}", "holder": f"r-{n}"} for n in range(1, args.cards + 1)]
        listing = workdir / "cards.json"
        listing.write_text(json.dumps({"profiles": {}, "cards": cards}))
        started = time.monotonic()
        await run_cli(
            workdir, "import", "cards", "import", str(listing), "--site", SITE, "--db", pg.dsn
        )
        first = await until_all(gates, 1, started)
        print(
            f"first list ({args.cards} cards, snapshots) on {len(gates)} gates: "
            f"p50 {percentile(first, 50):.2f} s, max {max(first):.2f} s",
            flush=True,
        )

        # The clock starts at the revoke in PostgreSQL (not at a CLI's start-up).
        with psycopg.connect(pg.dsn) as conn:
            started = time.monotonic()
            await asyncio.to_thread(revoke, conn, cards[0]["card"])
        times = await until_all(gates, 2, started)
        p99 = percentile(times, 99)
        print(
            f"revoke to every gate deciding with the new version ({len(gates)} gates): "
            f"p50 {percentile(times, 50):.2f} s, p99 {p99:.2f} s, max {max(times):.2f} s "
            f"(target p99 <= {TARGET_P99_S:.0f} s: {p99 / TARGET_P99_S:.2f}x)",
            flush=True,
        )

        away = gates[0]
        await away.stop()
        await run_cli(workdir, "revoke2", "cards", "revoke", cards[1]["card"], "--db", pg.dsn)
        await until_all(gates[1:], 3, time.monotonic())
        back = time.monotonic()
        await away.start()
        await away.wait_version(3, timeout=120)
        kind = away.received[-1]["type"]
        print(
            f"the gate that was away converged {time.monotonic() - back:.2f} s after it "
            f"returned (by {kind})",
            flush=True,
        )
    finally:
        for gate in gates:
            await gate.stop()
        for proc in procs:
            proc.kill()
        cluster.stop()
        pg.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=40)
    parser.add_argument("--cards", type=int, default=5000)
    args = parser.parse_args()
    with temp_dir("bench-access-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
