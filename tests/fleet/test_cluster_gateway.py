"""The real gateway daemon, MQTT 3.1.1, on a 3-node RabbitMQ cluster (issue 12).

The gateway's broker list is the three nodes; the node it is on is SIGKILLed
while it publishes. Every seq it made must land in PostgreSQL through the
ingest workers, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.report import build_report
from gateway.cli.operator_tools import keygen
from tests.cluster import RabbitCluster
from tests.daemon import Daemon, write_config
from tests.fleet.processes import CentralProcess
from tests.fleet.test_ingest import count, start_workers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def gateway_config(
    path: Path, site: str, gateway: str, brokers: list[str], **sections: Any
) -> Path:
    return write_config(
        path,
        brokers=brokers,
        gateway={"site": site, "id": gateway, "data_dir": "data"},
        mqtt={
            "brokers": brokers,
            "protocol": "3.1.1",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "keepalive_s": 10,
            "failback_s": 5,
        },
        **sections,
    )


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_gateway_survives_node_kill_with_every_seq_in_postgres(
    rabbit: RabbitCluster, dsn: str, site: str, workdir: Path
) -> None:
    workers = await start_workers(workdir, rabbit, dsn, site, prefetch=200, group_max=50)
    daemon = Daemon(
        gateway_config(workdir / "gw" / "config.yaml", site, "north-gate-1", rabbit.mqtt_urls)
    )
    try:
        daemon.start()
        await daemon.wait_for_log(f"mqtt connected: broker={rabbit.mqtt_urls[0]}", 60)
        readings = "SELECT count(*) FROM readings"
        await wait_for(lambda: count(dsn, readings) >= 10, 60, "first readings")
        before = daemon.output().count("mqtt connected")
        rabbit.kill_node(0)
        at_kill = daemon.last_seq()
        await wait_for(lambda: daemon.output().count("mqtt connected") > before, 60, "reconnect")
        assert f"mqtt connected: broker={rabbit.mqtt_urls[1]}" in daemon.output()
        await wait_for(lambda: daemon.last_seq() >= at_kill + 10, 60, "readings after the kill")
        last = daemon.last_seq()

        def landed() -> bool:
            with psycopg.connect(dsn) as conn:
                report = build_report(conn)
            return any(e.last_seq >= last and e.complete for e in report.epochs)

        await wait_for(landed, 90, f"every seq up to {last} in PostgreSQL")
        with psycopg.connect(dsn) as conn:
            report = build_report(conn)
        [epoch] = report.epochs
        assert epoch.gateway == "north-gate-1" and epoch.complete and not report.conflicts
        assert count(dsn, "SELECT count(DISTINCT seq) FROM readings") == count(dsn, readings)
    finally:
        daemon.stop()
        for worker in workers:
            worker.kill()
        if not rabbit.nodes[0].running:
            rabbit.start_node(0)


async def test_open_signs_sends_over_amqp_and_waits_for_the_result(
    rabbit: RabbitCluster, site: str, workdir: Path
) -> None:
    key_id, _, public_b64 = keygen(workdir / "keys", key_id="platform").partition(": ")
    daemon = Daemon(
        gateway_config(
            workdir / "gw" / "config.yaml",
            site,
            "north-gate-1",
            rabbit.mqtt_urls,
            commands={
                "public_keys": {key_id: public_b64},
                "permissions": {"door-east-1": {"actions": ["door.open"], "key_ids": [key_id]}},
            },
        )
    )
    try:
        daemon.start()
        await daemon.wait_for_log("mqtt connected", 60)
        await daemon.wait_for_log("device online: device=door-east-1", 60)
        opener = CentralProcess(
            workdir / "open.log",
            "open",
            "north-gate-1",
            "door-east-1",
            "--site",
            site,
            "--key",
            str(workdir / "keys" / "platform.pem"),
            "--key-id",
            key_id,
            "--amqp",
            ",".join(rabbit.amqp_urls[1:]),
            "--timeout",
            "20",
        )
        opener.start()
        assert opener.wait(60) == 0, opener.output()
        assert '"status": "done"' in opener.output()
        assert '"device": "door-east-1"' in opener.output()
    finally:
        daemon.stop()
