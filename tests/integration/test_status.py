"""The retained status message of CONTRACT.md 1.1: last_seen always there, clock, dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.daemon import Daemon, write_config
from tests.subscriber import subscribed

pytestmark = pytest.mark.integration

ROOT = "estates/changqing/gateways/north-gate-1"


async def test_status_carries_last_seen_null_for_a_silent_device_and_the_clock(
    tmp_path: Path, broker: Mosquitto
) -> None:
    silent = {
        "id": "door-east-1",
        "kind": "door_node",
        "transport": {"type": "modbus_rtu", "port": str(tmp_path / "no-such-tty")},
    }
    config = write_config(tmp_path / "gw" / "config.yaml", brokers=[broker.url], devices=[silent])
    daemon = Daemon(config)
    async with subscribed(broker.port, ROOT) as sub:
        daemon.start()
        try:
            await sub.wait_for(sub.online_status_seen)
            status = next(m.json() for m in sub.on("status") if m.json()["state"] == "online")
        finally:
            daemon.stop()
    door = status["devices"]["door-east-1"]
    assert (door["state"], door["last_seen"]) == ("offline", None)
    assert status["clock"] == {"synced": True}  # clock.source: trust in the tests' config
    assert status["dead_letter"] == 0
