"""The real daemon process: SIGTERM, SIGKILL crashes, the will, status and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker import Mosquitto, SharedBroker
from tests.daemon import REPO, Daemon, simulated_devices, write_config
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration

ROOT = "estates/changqing/gateways/north-gate-1"


async def watched_daemon(tmp_path: Path, share: SharedBroker) -> tuple[Daemon, Subscriber]:
    """A subscriber on the test's root, then the daemon of the default config started."""
    sub = share.subscriber()
    await sub.start()
    daemon = Daemon(share.write_config(tmp_path / "gw" / "config.yaml"))
    daemon.start()
    return daemon, sub


async def test_sigterm_exits_0_fast_publishes_offline_and_loses_nothing(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    daemon, sub = await watched_daemon(tmp_path, shared_broker)
    try:
        await sub.wait_for(lambda: len(sub.unique_seqs()) >= 10, timeout=30)
        sent = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 10)
        took = time.monotonic() - sent
    finally:
        daemon.stop()
    assert code == 0, daemon.output()
    assert took < 5.0
    await sub.wait_for(lambda: any(m.json().get("state") == "offline" for m in sub.on("status")))
    await sub.stop()
    offline = [m.json() for m in sub.on("status") if m.json()["state"] == "offline"]
    assert offline[-1]["reason"] == "shutdown"
    # Nothing committed is lost: each seq was delivered or is still in the outbox.
    have = set(sub.unique_seqs()) | daemon.stored_seqs()
    assert have == set(range(1, daemon.last_seq() + 1))


async def test_sigkill_leaves_the_will_on_the_status_topic(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    daemon, sub = await watched_daemon(tmp_path, shared_broker)
    try:
        await sub.wait_for(lambda: any(m.json()["state"] == "online" for m in sub.on("status")))
        daemon.kill()
        await sub.wait_for(lambda: sub.on("status")[-1].json()["state"] == "offline")
    finally:
        daemon.stop()
    await sub.stop()
    will = sub.on("status")[-1].json()
    assert will["reason"] == "connection_lost" and will["v"] == 1


async def test_repeated_sigkill_during_ingest_and_sync_loses_no_committed_reading(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rng = random.Random(1234)
    sub = Subscriber(broker.port, ROOT)
    await sub.start()
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=[broker.url],
        devices=simulated_devices(temperature_gates=4),
    )
    daemon = Daemon(config)
    try:
        for cycle in range(8):
            broker_up = cycle % 2 == 0  # odd cycles: ingest only; even: ingest and drain
            if not broker_up:
                broker.stop()
            elif broker.proc is None:
                broker.start()
            daemon.start()
            await daemon.wait_for_log("gateway running")
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            daemon.kill()
        if broker.proc is None:
            broker.start()
        daemon.start()
        await daemon.wait_for_log("gateway running")
        last = await daemon.wait_for_commit(after=daemon.last_seq())  # this run commits too
        await sub.wait_for(lambda: set(range(1, last + 1)) <= set(sub.unique_seqs()), timeout=30)
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    finally:
        daemon.stop()
        await sub.stop()
    assert last > 30, "the devices should have produced readings"
    assert daemon.integrity() == "ok"
    epochs = {r["id"].split(":")[1] for r in sub.readings()}
    assert len(epochs) == 1, "a crash must not start a new epoch"
    have = set(sub.unique_seqs()) | daemon.stored_seqs()
    assert have == set(range(1, daemon.last_seq() + 1))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shipped_config_is_valid() -> None:
    result = run_cli("check-config", str(REPO / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "5 devices" in result.stdout


async def test_status_reads_the_database_while_the_daemon_runs(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw" / "config.yaml", brokers=["mqtt://127.0.0.1:9"])
    daemon = Daemon(config)
    daemon.start()
    try:
        await daemon.wait_for_log("gateway running")
        await daemon.wait_for_commit(after=0)  # something committed to report on
        result = await asyncio.to_thread(run_cli, "status", "-c", str(config), "--json")
    finally:
        daemon.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["last_seq"] > 0 and report["epoch"]
    assert report["backlog"]["routine"] + report["backlog"]["alarm"] == report["last_seq"]
    assert report["oldest_unsent_age_s"] is not None and report["last_sync"] is None
    text = await asyncio.to_thread(run_cli, "status", "-c", str(config))
    assert "backlog" in text.stdout and "epoch" in text.stdout
