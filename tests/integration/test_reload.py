"""SIGHUP on the real daemon: only changed devices are (re)started; a bad file changes nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.broker import SharedBroker
from tests.daemon import Daemon, simulated_devices, write_config
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration


def devices_by_id() -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in simulated_devices(temperature_gates=2)}


def rewrite(config: Path, **changes: Any) -> None:
    raw = yaml.safe_load(config.read_text())
    raw.update(changes)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def status_devices(sub: Subscriber) -> dict[str, Any]:
    statuses = sub.on("status")
    return dict(statuses[-1].json().get("devices", {})) if statuses else {}


async def test_sighup_restarts_only_the_devices_that_changed(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    catalog = devices_by_id()
    before = [catalog[i] for i in ("door-east-1", "ebike-reader-1", "temp-gate-1", "temp-gate-2")]
    config = shared_broker.write_config(
        tmp_path / "gw" / "config.yaml",
        devices=before,
    )
    sub = shared_broker.subscriber()
    await sub.start()
    daemon = Daemon(config)
    daemon.start()
    try:
        await sub.wait_for(
            lambda: (
                all(s.get("state") == "online" for s in status_devices(sub).values())
                and len(status_devices(sub)) == 4
            ),
            timeout=20,
        )
        changed_gate = {**catalog["temp-gate-2"], "poll_interval_ms": 200}
        after = [catalog["door-east-1"], catalog["temp-gate-1"], changed_gate]
        after.append(catalog["band-receiver-1"])
        raw = yaml.safe_load(config.read_text())
        rewrite(
            config,
            devices=after,
            outbox={**raw["outbox"], "commit_interval_ms": 300},  # not applied live
        )
        reload_seq = max(sub.unique_seqs(), default=0)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log(
            "config reload: added=band-receiver-1 removed=ebike-reader-1 changed=temp-gate-2 "
            "unchanged=door-east-1,temp-gate-1"
        )
        # The new device comes online and the removed one leaves the status...
        await sub.wait_for(
            lambda: (
                status_devices(sub).get("band-receiver-1", {}).get("state") == "online"
                and "ebike-reader-1" not in status_devices(sub)
            ),
            timeout=20,
        )

        # ...and an untouched device's readings keep flowing, as does the restarted one's.
        def fresh(device: str) -> bool:
            return any(
                r["device"] == device and r["type"] == "temperature.body" and r["seq"] > reload_seq
                for r in sub.readings()
            )

        await sub.wait_for(lambda: fresh("temp-gate-1") and fresh("temp-gate-2"), timeout=20)
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    finally:
        daemon.stop()
        await sub.stop()
    log = daemon.output()
    assert "config reload: section outbox changed; needs a restart, not applied" in log
    for device in ("ebike-reader-1", "temp-gate-2"):
        assert f"device stopped: device={device}" in log
    for device in ("temp-gate-2", "band-receiver-1"):
        assert f"device started: device={device}" in log
    for untouched in ("door-east-1", "temp-gate-1"):
        assert f"device stopped: device={untouched}" not in log
        assert log.count(f"simulator started: device={untouched} ") == 1
    assert log.count("simulator started: device=temp-gate-2 ") == 2


async def test_an_invalid_file_is_refused_and_the_old_config_stays(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=["mqtt://127.0.0.1:9"],
        devices=[devices_by_id()["temp-gate-1"]],
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        await daemon.wait_for_log("device online: device=temp-gate-1")
        good = config.read_text()
        broken = yaml.safe_load(good)
        broken["devices"][0]["poll_intervl_ms"] = 100  # a typo
        broken["devices"].append({"id": "door-west-1", "kind": "door_node"})  # no transport
        config.write_text(yaml.safe_dump(broken, sort_keys=False))
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("config reload refused, the running config stays in force")
        seq = daemon.last_seq()
        await daemon.wait_for_commit(after=seq)  # the running device still produces readings
        assert daemon.proc is not None and daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    finally:
        daemon.stop()
    log = daemon.output()
    refused = next(line for line in log.splitlines() if "config reload refused" in line)
    assert "devices[0].poll_intervl_ms: unknown key (typo?)" in refused
    assert "devices[1].transport: Field required" in refused
    assert "device stopped" not in log and "device started" not in log


async def test_a_change_of_access_source_needs_a_restart(tmp_path: Path) -> None:
    """Switching file -> platform on SIGHUP is refused: the doors keep the card file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.cli.operator_tools import public_key_b64

    door = devices_by_id()["door-east-1"]
    config = write_config(
        tmp_path / "gw" / "config.yaml", brokers=["mqtt://127.0.0.1:9"], devices=[door]
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        await daemon.wait_for_log("gateway running")
        raw = yaml.safe_load(config.read_text())
        rewrite(
            config,
            gateway={**raw["gateway"], "timezone": "Asia/Shanghai"},
            commands={"public_keys": {"k": public_key_b64(Ed25519PrivateKey.generate())}},
            access={"source": "platform", "key_ids": ["k"]},
        )
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("access.source changed; needs a restart, not applied")
        assert not (config.parent / "data" / "access.sqlite3").exists()
    finally:
        daemon.stop()
