"""The uhppote controller under the real daemon, a real mosquitto and SIGKILL.

The simulator runs in the test process so the test can drop its pushes and
see what reached it; the daemon talks to it over loopback UDP.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.uhppote import UhppoteSimulator
from gateway.cli.operator_tools import build_command, keygen, load_private_key
from gateway.commands.model import sign
from tests.broker import Mosquitto
from tests.daemon import Daemon, write_config
from tests.subscriber import Subscriber, subscribed
from tests.uhppote_rig import SERIAL, controller_entry

pytestmark = pytest.mark.integration

ROOT = "estates/changqing/gateways/north-gate-1"
KEY_ID = "platform-2026"


def controller(address: str) -> dict[str, Any]:
    return controller_entry(address, timeout_ms=300, retry_s=0.3, catch_up_interval_s=1)


def door_events(sub: Subscriber) -> list[dict[str, Any]]:
    return [r for r in sub.readings() if r["type"] == "door.event"]


def one_per_index(sub: Subscriber) -> dict[int, set[str]]:
    """event_index -> the reading ids that carried it (a resend keeps its id)."""
    ids: dict[int, set[str]] = {}
    for r in door_events(sub):
        ids.setdefault(r["data"]["event_index"], set()).add(r["id"])
    return ids


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, broker: Mosquitto, sim: UhppoteSimulator
) -> AsyncIterator[tuple[Daemon, Subscriber]]:
    public = dict([keygen(tmp_path / "keys", key_id=KEY_ID).split(": ")])
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=[broker.url],
        devices=[controller(sim.address)],
        commands={
            "public_keys": public,
            "permissions": {
                "gate-east": {"actions": ["door.open", "door.set_mode"], "key_ids": [KEY_ID]}
            },
        },
    )
    daemon = Daemon(config)
    async with subscribed(broker.port, ROOT) as sub:
        daemon.start()
        try:
            await sub.wait_for(
                lambda: any(
                    r["type"] == "device.status" and r["data"]["state"] == "online"
                    for r in sub.readings()
                )
            )
            yield daemon, sub
        finally:
            daemon.stop()


async def test_events_reach_the_broker_once_and_door_open_by_door_id(
    tmp_path: Path, broker: Mosquitto
) -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    try:
        async with gateway(tmp_path, broker, sim) as (_daemon, sub):
            sim.swipe(10058400, 1)
            sim.open_door(1)
            sim.close_door(1)
            await sub.wait_for(lambda: len(door_events(sub)) >= 3)
            unsigned = build_command(
                command_id=str(uuid.uuid4()),
                gateway="north-gate-1",
                action="door.open",
                device="gate-east",
                params={"hold_seconds": 5},
                key_id=KEY_ID,
                issued_at=time.time(),
                ttl_s=30,
            )
            command = sign(unsigned, load_private_key(tmp_path / "keys" / f"{KEY_ID}.pem"))
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.publish(f"{ROOT}/commands", json.dumps(command).encode(), qos=1)
            await sub.wait_for(
                lambda: any(m.json()["id"] == command["id"] for m in sub.on("commands/results"))
            )
            result = next(m.json() for m in sub.on("commands/results"))
            assert (result["status"], result["device"]) == ("done", "gate-east")
            await sub.wait_for(lambda: len(door_events(sub)) >= 4)
            events = door_events(sub)
            assert [(e["data"]["event"], e["data"]["door"]) for e in events] == [
                ("denied", "gate-east"),
                ("opened", "gate-east"),
                ("closed", "gate-east"),
                ("remote_open", "gate-east"),
            ]
            assert all(e["device"] == "gate-ctl-1" for e in events)
            assert events[0]["data"]["card"] == "997AA0"
    finally:
        await sim.stop()


async def test_dropped_pushes_and_sigkill_lose_nothing_and_repeat_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    try:
        async with gateway(tmp_path, broker, sim) as (daemon, sub):
            sim.set_drop_pushes(True)
            for n in range(1, 21):
                sim.swipe(n, 1 + n % 2)
            await sub.wait_for(lambda: len(one_per_index(sub)) >= 20)
            # Killed with events made durable and the bookmark just moved (or not).
            for n in range(21, 31):
                sim.swipe(n, 1)
            daemon.kill()
            sim.add_events(10)  # recorded while the gateway is down: 31..40
            daemon.start()
            await sub.wait_for(lambda: len(one_per_index(sub)) >= 40, timeout=30)
            ids = one_per_index(sub)
            assert sorted(ids) == list(range(1, 41))
            # One reading per controller event: a resend carries the same id.
            assert all(len(v) == 1 for v in ids.values()), ids
            indexes = [r["data"]["event_index"] for r in door_events(sub)]
            first_seen = list(dict.fromkeys(indexes))
            assert first_seen == sorted(first_seen)
    finally:
        await sim.stop()


async def test_an_unanswering_controller_goes_offline_the_gate_keeps_working_and_it_returns(
    tmp_path: Path, broker: Mosquitto
) -> None:
    from drivers.sim.temperature_gate import TemperatureGateSimulator
    from drivers.temperature_gate import TemperatureGateConfig

    gate_cfg: dict[str, Any] = {
        "id": "temp-gate-1",
        "kind": "temperature_gate",
        "transport": {"type": "modbus_rtu"},
        "poll_interval_ms": 100,
    }
    gate = TemperatureGateSimulator(
        TemperatureGateConfig.model_validate(gate_cfg), tmp_path / "gate", ambient=False
    )
    gate_cfg["transport"]["port"] = (await gate.start()).port
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    wrong = UhppoteSimulator(SERIAL + 1)  # configured with our serial: never answers
    await wrong.start()
    stranger = controller(wrong.address) | {"id": "gate-ctl-2", "doors": {1: "side-door"}}
    sub = Subscriber(broker.port, ROOT)
    await sub.start()
    daemon = Daemon(
        write_config(
            tmp_path / "gw" / "config.yaml",
            brokers=[broker.url],
            devices=[controller(sim.address), stranger, gate_cfg],
        )
    )
    daemon.start()

    def states(device: str) -> list[str]:
        """Online/offline transitions (other device.status readings carry a detail)."""
        return [
            r["data"]["state"]
            for r in sub.readings()
            if r["type"] == "device.status"
            and r["device"] == device
            and (r["data"]["state"] == "offline" or not r["data"]["detail"])
        ]

    try:
        await sub.wait_for(lambda: "offline" in states("gate-ctl-2"), timeout=30)
        offline = next(
            r
            for r in sub.readings()
            if r["device"] == "gate-ctl-2" and r["data"].get("state") == "offline"
        )
        assert "no reply" in offline["data"]["detail"] and offline["priority"] == "alarm"
        await sub.wait_for(lambda: "online" in states("gate-ctl-1"))
        sim.unplug()
        await sub.wait_for(lambda: states("gate-ctl-1")[-1:] == ["offline"], timeout=30)
        # The rest of the gate keeps working meanwhile.
        gate.inject_reading(36.6)
        await sub.wait_for(lambda: any(r["type"] == "temperature.body" for r in sub.readings()))
        sim.swipe(10058400, 2)  # recorded while unreachable
        sim.replug()
        await sub.wait_for(lambda: states("gate-ctl-1")[-1:] == ["online"], timeout=30)
        await sub.wait_for(lambda: len(door_events(sub)) >= 1)
        assert door_events(sub)[0]["data"]["door"] == "gate-west"
    finally:
        daemon.stop()
        await sub.stop()
        await sim.stop()
        await wrong.stop()
        await gate.stop()
