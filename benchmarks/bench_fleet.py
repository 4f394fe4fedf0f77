"""The fleet: 40 real gateway daemons on a 3-node RabbitMQ cluster, 2 ingest workers, PostgreSQL.

Each gateway runs its shipped simulated devices (ambient mode: a swipe about
every 4 s, a passer-by about every 0.5 s, wristband beacons every second),
``mqtt.protocol: "3.1.1"`` and the three nodes as its failover list, rotated
so the fleet is spread over the nodes. Gateway 0 reaches the cluster through
a TCP proxy run here (that is how its network is cut), and has one more
temperature gate, simulated here, that reports fevers during the cut.

Chaos, at fractions of ``--seconds`` (the issue's run is 600 s):

* 15 %: broker node 1 SIGKILLed, restarted 30 s later;
* 35 %: ingest worker 1 SIGKILLed (restarted 20 s later);
* 50 %: 5 gateways SIGKILLed, restarted 5 s later;
* 65 %: gateway 0's network cut for 60 s (every connection dropped, new ones
  accepted and left silent).

At the end the gateways stop (SIGTERM: they flush), the workers finish, and
the run checks, per gate and epoch: every ``seq`` in PostgreSQL or explained
by ``gateway.dropped``, no ``id`` with two bodies, and after each outage
(the node loss, the SIGKILLs, the cut) alarms first: in each affected
gateway's backlog (made before it reconnected, sent after the outage began)
no routine reading sent before the first alarm. It prints the table per
gate, and the reconnect times of the gateways that were on the killed node
(p50, p99).

    .venv/bin/python -m benchmarks.bench_fleet [--gateways 40] [--seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import log_lines, percentile, temp_dir
from central.report import build_report, format_report
from drivers.sim.temperature_gate import TemperatureGateSimulator
from drivers.temperature_gate import TemperatureGateConfig
from tests.cluster import RabbitCluster
from tests.daemon import Daemon, simulated_devices
from tests.fleet.gateways import CuttableProxy, gateway_config, spread, start_all
from tests.fleet.processes import CentralProcess, ingest_worker
from tests.postgres import Postgres

SITE = "fleet"
CUT_S = 60.0


# An outage's backlog: what a gateway made before it reconnected and sent
# after the outage began (by the batch's sent_at, the gateway's sending
# order: two competing workers may commit an earlier batch a little later).
_BACKLOG = """
SELECT count(*) FILTER (WHERE priority = 'alarm'),
       min(sent_at) FILTER (WHERE priority = 'alarm'),
       min(sent_at) FILTER (WHERE priority = 'routine')
FROM readings
WHERE gateway = %s AND ts <= to_timestamp(%s) AND sent_at >= to_timestamp(%s)
"""


@dataclass
class Outage:
    """Gateways cut off from the platform at ``since`` (wall time)."""

    label: str
    since: float
    gateways: list[Daemon]

    def reconnected(self) -> list[float]:
        """When each gateway logged its first ``mqtt connected`` after ``since``."""
        out = []
        for daemon in self.gateways:
            stamps = log_lines(daemon.log.read_text(), "mqtt connected")
            out += [next(stamp for stamp, _ in stamps if stamp > self.since)]
        return out

    def check_alarms_first(self, conn: psycopg.Connection[Any]) -> int:
        """Print, for each gateway's backlog, whether its alarms went before its routine
        readings; return how many gateways sent a routine reading first."""
        with_alarms = wrong = 0
        for daemon, back in zip(self.gateways, self.reconnected(), strict=True):
            row = conn.execute(_BACKLOG, (gateway_id(daemon), back, self.since)).fetchone()
            assert row is not None
            alarms, first_alarm, first_routine = row
            if alarms:
                with_alarms += 1
                if first_routine is not None and first_routine < first_alarm:
                    wrong += 1
                    print(
                        f"  {gateway_id(daemon)}: routine sent {first_routine}, "
                        f"first alarm {first_alarm}"
                    )
        print(
            f"alarms first after {self.label}: {len(self.gateways)} gateways, "
            f"{with_alarms} with alarms in their backlog, "
            f"{wrong} sent a routine reading first: {'CHECK' if wrong else 'alarms first'}"
        )
        return wrong


def gateway_id(daemon: Daemon) -> str:
    return daemon.config.parent.name


async def run(args: argparse.Namespace, workdir: Path) -> int:  # one scenario
    duration = args.seconds
    cut_s = min(CUT_S, duration / 10)
    cluster = RabbitCluster(workdir / "cluster")
    pg = Postgres()
    daemons: list[Daemon] = []
    workers: list[CentralProcess] = []
    proxies: list[CuttableProxy] = []
    fever_sim: TemperatureGateSimulator | None = None
    try:
        cluster.start()
        pg.start()
        dsn = pg.dsn
        urls = cluster.amqp_urls
        for i in range(2):
            order = urls[i:] + urls[:i]
            worker = ingest_worker(
                workdir / f"worker{i}.log",
                dsn,
                order,
                queue="fleet-ingest",
                site=SITE,
                prefetch=500,
                group_max=200,
            )
            worker.start()
            workers.append(worker)
        for worker in workers:
            await worker.wait_for_log("ingest consuming", 120)

        proxies = [CuttableProxy(node.mqtt_port) for node in cluster.nodes]
        for proxy in proxies:
            await proxy.start()
        fever_config = TemperatureGateConfig.model_validate(
            {
                "id": "temp-gate-9",
                "kind": "temperature_gate",
                "simulate": True,
                "transport": {"type": "modbus_rtu"},
                "poll_interval_ms": 100,
            }
        )
        # No passers-by of its own: an injected fever is never overwritten by
        # the next measurement before a (loaded) poll reads it.
        fever_sim = TemperatureGateSimulator(fever_config, workdir / "fever-sim", ambient=False)
        endpoint = await fever_sim.start()
        for g in range(args.gateways):
            name = f"gate-{g:02d}"
            brokers = spread(cluster.mqtt_urls, g)
            devices = simulated_devices()
            if g == 0:
                brokers = [p.url for p in proxies]
                devices.append(
                    {
                        "id": "temp-gate-9",
                        "kind": "temperature_gate",
                        "simulate": False,
                        "transport": {"type": "modbus_rtu", "port": endpoint.port},
                        "poll_interval_ms": 100,
                    }
                )
            config = gateway_config(
                workdir / name / "config.yaml",
                site=SITE,
                gateway=name,
                brokers=brokers,
                devices=devices,
            )
            daemons.append(Daemon(config))
        await start_all(daemons)
        started = time.monotonic()
        print(f"fleet up: {len(daemons)} gateways, chaos over {duration:.0f} s", flush=True)

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, started + duration * fraction - time.monotonic()))

        # 1. a broker node dies and comes back
        await at(0.15)
        node_killed_at = time.time()
        cluster.kill_node(1)
        print(f"t={time.monotonic() - started:.0f}s node 1 killed", flush=True)
        await asyncio.sleep(30)
        await asyncio.to_thread(cluster.start_node, 1)
        print(f"t={time.monotonic() - started:.0f}s node 1 back", flush=True)
        # 2. an ingest worker dies
        await at(0.35)
        workers[1].kill()
        print(f"t={time.monotonic() - started:.0f}s worker 1 killed", flush=True)
        await asyncio.sleep(20)
        workers[1].start()
        # 3. five gateways SIGKILLed and restarted
        await at(0.5)
        victims = daemons[5:10]
        victims_killed_at = time.time()
        for daemon in victims:
            daemon.kill()
        print(f"t={time.monotonic() - started:.0f}s 5 gateways killed", flush=True)
        await asyncio.sleep(5)
        for daemon in victims:
            daemon.start()
        # 4. gateway 0's network cut; fevers at its gate meanwhile
        await at(0.65)
        cut_from = time.time()
        for proxy in proxies:
            proxy.sever()
        print(f"t={time.monotonic() - started:.0f}s gateway 0 cut for {cut_s:.0f} s", flush=True)
        fevers = 0
        while time.time() - cut_from < cut_s:
            fever_sim.inject_reading(38.5)
            fevers += 1
            await asyncio.sleep(5)
        for proxy in proxies:
            proxy.mend()
        await at(1.0)

        for daemon in daemons:
            daemon.signal(signal.SIGTERM)
        for daemon in daemons:
            await asyncio.to_thread(daemon.wait, 60)
        # What each gateway made, and what it still holds (sent next time it
        # runs: not lost). Everything else must reach PostgreSQL.
        made = {f"gate-{g:02d}": d.last_seq() for g, d in enumerate(daemons)}
        held = {f"gate-{g:02d}": d.stored_seqs() for g, d in enumerate(daemons)}

        explained: dict[str, set[int]] = {}

        def lost() -> dict[str, list[int]]:
            with psycopg.connect(dsn) as conn:
                rows = conn.execute(
                    "SELECT gateway, array_agg(seq) FROM readings GROUP BY gateway"
                ).fetchall()
                # Seqs the gateway reported shedding on purpose (gateway.dropped).
                for epoch in build_report(conn).epochs:
                    for lo, hi in epoch.explained:
                        explained.setdefault(epoch.gateway, set()).update(range(lo, hi + 1))
            got = {gw: set(seqs) for gw, seqs in rows}
            out = {}
            for gw, last in made.items():
                gone = set(range(1, last + 1)) - got.get(gw, set()) - held[gw]
                gone -= explained.get(gw, set())
                if gone:
                    out[gw] = sorted(gone)
            return out

        deadline = time.monotonic() + 300
        while (missing := lost()) and time.monotonic() < deadline:
            await asyncio.sleep(2)
        with psycopg.connect(dsn) as conn:
            report = build_report(conn)
            per_gate: dict[str, int] = dict(
                conn.execute("SELECT gateway, count(*) FROM readings GROUP BY gateway").fetchall()
            )
        print(format_report(report))
        print(f"{'gateway':<10} {'made':>7} {'in PG':>7} {'held':>6} {'dropped':>8} {'lost':>5}")
        for gw, last in made.items():
            print(
                f"{gw:<10} {last:>7} {per_gate.get(gw, 0):>7} {len(held[gw]):>6} "
                f"{len(explained.get(gw, ())):>8} {len(missing.get(gw, [])):>5}"
            )
        print(
            f"readings made: {sum(made.values())}; in PostgreSQL: {sum(per_gate.values())}; "
            f"held unsent by stopped gateways: {sum(len(h) for h in held.values())}; "
            f"dropped on purpose (gateway.dropped): {sum(len(e) for e in explained.values())}; "
            f"lost: {sum(len(v) for v in missing.values())}"
        )
        with psycopg.connect(dsn) as conn:
            fever_rows = conn.execute(
                "SELECT count(*) FILTER (WHERE (data->>'fever')::boolean), count(*) FROM alarms "
                "WHERE gateway = 'gate-00' AND device = 'temp-gate-9'"
            ).fetchone()
            assert fever_rows is not None
            print(
                f"cut: {fevers} fevers injected, {fever_rows[0]} fever alarms stored "
                f"({fever_rows[1]} alarms of temp-gate-9)"
            )
            node_gates = [d for g, d in enumerate(daemons) if g % 3 == 1 and g != 0]
            outages = [
                Outage("the node loss", node_killed_at, node_gates),
                Outage(f"the {len(victims)} SIGKILLs", victims_killed_at, victims),
                Outage("the network cut", cut_from, daemons[:1]),
            ]
            out_of_order = sum(outage.check_alarms_first(conn) for outage in outages)
        # Only those whose first node was node 1 (gateway 0 goes through the proxies).
        reconnects = [back - node_killed_at for back in outages[0].reconnected()]
        if len(reconnects) >= 2:
            print(
                f"reconnect after node loss ({len(reconnects)} gateways): "
                f"p50 {percentile(reconnects, 50):.2f} s, p99 {percentile(reconnects, 99):.2f} s"
            )
        ok = not missing and not report.conflicts and not out_of_order
        print(
            "RESULT:",
            "every seq in PostgreSQL or held by its gateway, no conflicts, alarms first"
            if ok
            else "LOST READINGS, CONFLICTS or ROUTINE BEFORE ALARMS (see above)",
        )
        return 0 if ok else 1
    finally:
        for daemon in daemons:
            daemon.stop()
        for worker in workers:
            worker.kill()
        for proxy in proxies:
            await proxy.stop()
        if fever_sim is not None:
            await fever_sim.stop()
        cluster.stop()
        pg.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    with temp_dir("bench-fleet-") as tmp:
        raise SystemExit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
