"""RabbitMQ 3.10 or NATS 2.9 under the gateway: the measurement that chose the engine.

For each engine: start a 3-node cluster (time to all MQTT ports up), run one
real gateway daemon in ``mqtt.protocol: "3.1.1"`` with the three nodes as its
failover list, and a platform subscriber (persistent 3.1.1 session) on the
third node. After readings flow, SIGKILL the node the gateway is on, measure
how long the gateway takes to be connected again, let it run on, then check
that every ``seq`` from 1 to the gateway's last one reached the subscriber.

    .venv/bin/python -m benchmarks.bench_engines [--engines rabbitmq,nats] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

from benchmarks.common import temp_dir, wait_until
from tests.cluster import Cluster, NatsCluster, RabbitCluster
from tests.daemon import Daemon, write_config
from tests.subscriber import Subscriber

ROOT = "estates/changqing/gateways/north-gate-1"


async def measure(engine: str, workdir: Path, seconds: float) -> dict[str, object]:
    cluster: Cluster = (
        RabbitCluster(workdir / "cluster")
        if engine == "rabbitmq"
        else NatsCluster(workdir / "cluster")
    )
    started = time.monotonic()
    cluster.start()
    subscriber = Subscriber(cluster.nodes[2].mqtt_port, ROOT, client_id="bench-platform")
    daemon = Daemon(
        write_config(
            workdir / "gw" / "config.yaml",
            brokers=cluster.mqtt_urls,
            mqtt={
                "brokers": cluster.mqtt_urls,
                "protocol": "3.1.1",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 2.0,
                "keepalive_s": 10,
            },
        )
    )
    stage = "subscriber"
    try:
        # Up means a persistent MQTT session works (NATS: JetStream has a leader).
        subscriber._task = asyncio.create_task(subscriber._run())
        await asyncio.wait_for(subscriber._ready.wait(), 120)
        startup_s = time.monotonic() - started
        stage = "gateway connect"
        daemon.start()
        await daemon.wait_for_log("mqtt connected", 30)
        stage = "first readings"
        await subscriber.wait_for(lambda: len(subscriber.unique_seqs()) >= 20, 60)
        stage = "reconnect"
        killed_at = time.monotonic()
        cluster.kill_node(0)
        before = daemon.output().count("mqtt connected")
        await wait_until(lambda: daemon.output().count("mqtt connected") > before, 60)
        reconnect_s = time.monotonic() - killed_at
        await asyncio.sleep(seconds)
        last = daemon.last_seq()
        with contextlib.suppress(TimeoutError):
            await subscriber.wait_for(
                lambda: set(range(1, last + 1)) <= set(subscriber.unique_seqs()), 30
            )
        missing = sorted(set(range(1, last + 1)) - set(subscriber.unique_seqs()))
        return {
            "engine": engine,
            "startup_s": round(startup_s, 1),
            "reconnect_s": round(reconnect_s, 2),
            "last_seq": last,
            "missing": len(missing),
            "first_missing": missing[:10],
            "duplicates": len(subscriber.readings()) - len(set(subscriber.unique_seqs())),
        }
    except TimeoutError as exc:
        tail = daemon.output()[-1500:] if daemon.log.exists() else ""
        raise RuntimeError(f"timed out at {stage}; gateway log: {tail}") from exc
    finally:
        daemon.stop()
        await subscriber.stop()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="rabbitmq,nats")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for engine in args.engines.split(","):
        with temp_dir(f"bench-engine-{engine}-") as tmp:
            try:
                result = asyncio.run(measure(engine, Path(tmp), args.seconds))
            except Exception as exc:  # noqa: BLE001  # report the engine's failure, go on
                result = {"engine": engine, "failed": repr(exc)[:2000]}
            print(result, flush=True)


if __name__ == "__main__":
    main()
