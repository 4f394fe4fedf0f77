"""Remote door commands end to end: real daemon, real mosquitto, door simulator on a pty.

The door simulator runs in the test process (not inside the daemon) so the
tests can see every relay pulse that reaches it.

Longer than 400 lines because one rig serves every path a command can take:
each rejection reason, reply topics, replay across a restart, a crash
mid-command and hostile payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.sim.door_node import DoorNodeSimulator
from gateway.cli.operator_tools import build_command, load_private_key
from gateway.commands.model import sign
from gateway.runtime.faults import ENV_VAR
from tests.broker import SharedBroker
from tests.daemon import REPO, Daemon, send_command_argv
from tests.door_daemon import operator_keys, running, start_door_sim
from tests.fakes import wait_until
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration

KEY_ID = "platform-2026"
OTHER_KEY_ID = "maintenance"  # known, but granted nothing on the door


@dataclass
class Rig:
    daemon: Daemon
    sim: DoorNodeSimulator
    sub: Subscriber
    broker: SharedBroker
    keys: Path

    def command(
        self,
        *,
        action: str = "door.open",
        device: str = "door-east-1",
        params: dict[str, Any] | None = None,
        key_id: str = KEY_ID,
        issued_at: float | None = None,
        ttl_s: float = 30,
        gateway: str | None = None,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        unsigned = build_command(
            command_id=command_id or str(uuid.uuid4()),
            gateway=gateway or self.broker.gateway_id,
            action=action,
            device=device,
            params=params if params is not None else {"hold_seconds": 2},
            key_id=key_id,
            issued_at=time.time() if issued_at is None else issued_at,
            ttl_s=ttl_s,
        )
        return sign(unsigned, load_private_key(self.keys / f"{key_id}.pem"))

    async def publish(
        self, payload: bytes | dict[str, Any], *, response_topic: str | None = None
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            props.CorrelationData = b"corr-42"
        async with aiomqtt.Client(
            "127.0.0.1", self.broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.publish(f"{self.broker.root}/commands", body, qos=1, properties=props)

    def results(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.on("commands/results")]

    async def result_for(self, command_id: str | None, *, count: int = 1) -> dict[str, Any]:
        await self.sub.wait_for(
            lambda: len([r for r in self.results() if r["id"] == command_id]) >= count
        )
        return [r for r in self.results() if r["id"] == command_id][count - 1]

    def audits(self) -> list[dict[str, Any]]:
        return [r for r in self.sub.readings() if r["type"] == "audit.command"]

    def door_events(self, event: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.sub.readings()
            if r["type"] == "door.event" and r["data"]["event"] == event
        ]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, broker: SharedBroker, *, crash_at: str | None = None
) -> AsyncIterator[Rig]:
    """The daemon, its door, a platform subscriber; ``crash_at`` arms a crash point
    (``gateway.runtime.faults``) for the first start only."""
    keys = tmp_path / "keys"
    public = operator_keys(keys, KEY_ID, OTHER_KEY_ID)
    sim, door = await start_door_sim(tmp_path / "sim", "door-east-1")
    config = broker.write_config(
        tmp_path / "gw" / "config.yaml",
        devices=[door],
        commands={
            "unverified_report_s": 1,
            "public_keys": public,
            "permissions": {
                "door-east-1": {"actions": ["door.open", "door.set_mode"], "key_ids": [KEY_ID]},
                broker.gateway_id: {"actions": ["gateway.ping"], "key_ids": [KEY_ID]},
            },
        },
    )
    sub = broker.subscriber()
    daemon = Daemon(config)
    async with running(daemon, sub, sim, env={ENV_VAR: crash_at} if crash_at else None):
        the_rig = Rig(daemon, sim, sub, broker, keys)
        await wait_ready(the_rig)
        yield the_rig


async def wait_ready(the_rig: Rig) -> None:
    """Online status published (the subscription to commands precedes it) and door polled."""
    start = len(the_rig.sub.on("status"))
    await the_rig.sub.wait_for(
        lambda: any(m.json()["state"] == "online" for m in the_rig.sub.on("status")[start:])
    )
    await the_rig.sub.wait_for(
        lambda: any(
            r["type"] == "device.status" and r["data"]["state"] == "online"
            for r in the_rig.sub.readings()
        )
    )


async def test_door_open_pulses_the_relay_and_answers_done(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        command = r.command(params={"hold_seconds": 4})
        await r.publish(command, response_topic=f"{r.broker.root}/commands/results/test")
        result = await r.result_for(command["id"])
        assert result["status"] == "done" and result["reason"] is None
        assert result["device"] == "door-east-1" and result["v"] == 1
        assert result["latency_ms"] > 0 and result["at"].endswith("Z")
        pulses = r.sim.node.pulses
        assert [(p.relay, p.tenths) for p in pulses] == [(1, 40)]
        await r.sub.wait_for(lambda: bool(r.door_events("remote_open")) and bool(r.audits()))
        assert r.audits()[0]["data"]["status"] == "done"
        assert r.audits()[0]["data"]["id"] == command["id"]
        await r.sub.wait_for(lambda: bool(r.sub.on("commands/results/test")))
        reply = r.sub.on("commands/results/test")[0]
        assert json.loads(reply.payload)["id"] == command["id"]


async def test_garbage_with_a_wildcard_response_topic_does_not_stop_the_gateway(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    """Issue 9: `not json` with response topic `a/#` used to crash the daemon at every start."""
    async with rig(tmp_path, shared_broker) as r:
        await r.publish(b"not json", response_topic="a/#")
        await r.sub.wait_for(lambda: any(x["reason"] == "bad_json" for x in r.results()))
        forged = r.command()
        forged["params"] = {"hold_seconds": 30}  # the signature no longer covers it
        await r.publish(forged, response_topic=f"{r.broker.root}/commands/results/steal")
        assert (await r.result_for(forged["id"]))["reason"] == "bad_signature"
        outside = r.command(action="gateway.ping", device=r.broker.gateway_id, params={})
        # Authentic, but outside the prefix: the status topic must not get a result.
        await r.publish(outside, response_topic=f"{r.broker.root}/status")
        assert (await r.result_for(outside["id"]))["status"] == "done"
        ok = r.command()
        await r.publish(ok)
        assert (await r.result_for(ok["id"]))["status"] == "done"
        assert r.daemon.proc is not None and r.daemon.proc.poll() is None
        assert r.daemon.output().count("mqtt connected") == 1
        # Only the results topic carried results: no reply went anywhere else.
        assert not r.sub.on("commands/results/steal")
        assert all(m.json().get("state") for m in r.sub.on("status"))


UNVERIFIED = {"bad_json", "bad_schema", "unknown_key", "bad_signature"}
REJECTIONS = [
    "bad_json",
    "bad_schema",
    "unknown_key",
    "bad_signature",
    "wrong_gateway",
    "not_yet_valid",
    "expired",
    "ttl_too_long",
    "unknown_device",
    "not_permitted",
]


def rejected_payload(r: Rig, reason: str) -> tuple[bytes | dict[str, Any], str | None]:
    now = time.time()
    if reason == "bad_json":
        return b'{"v": 1, "id": "x"', None
    if reason == "bad_schema":
        command = r.command()
        command["params"] = {"hold_seconds": 99}
        return command, command["id"]
    if reason == "unknown_key":
        command = r.command()
        command["key_id"] = "nobody"
        return command, command["id"]
    if reason == "bad_signature":
        command = r.command()
        command["params"] = {"hold_seconds": 3}  # changed after signing
        return command, command["id"]
    builders = {
        "wrong_gateway": lambda: r.command(gateway="south-gate-2"),
        "not_yet_valid": lambda: r.command(issued_at=now + 300),
        "expired": lambda: r.command(issued_at=now - 120, ttl_s=30),
        "ttl_too_long": lambda: r.command(ttl_s=3600),
        "unknown_device": lambda: r.command(device="door-west-9"),
        "not_permitted": lambda: r.command(key_id=OTHER_KEY_ID),
    }
    command = builders[reason]()
    return command, command["id"]


@pytest.mark.parametrize("reason", REJECTIONS)
async def test_each_rejection_reason_leaves_the_relay_alone(
    tmp_path: Path, shared_broker: SharedBroker, reason: str
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        payload, command_id = rejected_payload(r, reason)
        await r.publish(payload)
        result = await r.result_for(command_id)
        assert result["status"] == "rejected"
        assert result["reason"] == reason
        # A valid command afterwards still works: the rejection cost nothing.
        ok = r.command()
        await r.publish(ok)
        assert (await r.result_for(ok["id"]))["status"] == "done"
        assert len(r.sim.node.pulses) == 1, "only the valid command moved the relay"
        await r.sub.wait_for(lambda: len(r.audits()) >= 2)
        audit = next(a["data"] for a in r.audits() if a["data"]["id"] != ok["id"])
        assert audit["reason"] == reason
        if reason in UNVERIFIED:  # one aggregate reading per interval, not one each
            assert (audit["id"], audit["unverified"]) == (None, {reason: 1})


async def stop_cleanly(r: Rig) -> None:
    """SIGTERM, and the daemon exits 0."""
    r.daemon.signal(signal.SIGTERM)
    assert await asyncio.to_thread(r.daemon.wait, 20) == 0, r.daemon.output()


async def restart(r: Rig) -> None:
    """A clean stop, a start, ready again."""
    await stop_cleanly(r)
    r.daemon.start()
    await wait_ready(r)


async def refused_as_replay(r: Rig, command: dict[str, Any], *, count: int) -> None:
    """Publish ``command`` again; its ``count``-th result says replayed."""
    await r.publish(command)
    again = await r.result_for(command["id"], count=count)
    assert (again["status"], again["reason"]) == ("rejected", "replayed")


async def test_replay_is_rejected_before_and_after_a_restart(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        command = r.command()
        await r.publish(command)
        assert (await r.result_for(command["id"]))["status"] == "done"
        await refused_as_replay(r, command, count=2)
        await restart(r)
        await refused_as_replay(r, command, count=3)
        assert len(r.sim.node.pulses) == 1


async def test_command_delivered_after_it_expired_is_rejected(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        await stop_cleanly(r)
        # The broker keeps the gateway's session: a QoS 1 command with no MQTT
        # expiry waits there while the gateway is away, and expires meanwhile
        # (issued 2 s ago with a 1 s ttl: already past when the gateway returns).
        command = r.command(issued_at=time.time() - 2, ttl_s=1)
        await r.publish(command)
        r.daemon.start()
        result = await r.result_for(command["id"])
        assert (result["status"], result["reason"]) == ("rejected", "expired")
        assert not r.sim.node.pulses


async def killed_at_its_crash_point(r: Rig) -> None:
    """The daemon SIGKILLed itself at the armed crash point: wait for that fact."""
    code = await asyncio.to_thread(r.daemon.wait, 30)
    assert code == -signal.SIGKILL, r.daemon.output()


async def test_crash_between_accept_and_finish_never_reopens(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    # The kill lands exactly after the accept is synced and before the door is
    # told anything (a crash point, not a race against the door's timeout).
    async with rig(tmp_path, shared_broker, crash_at="command-accepted") as r:
        command = r.command()
        await r.publish(command)
        await killed_at_its_crash_point(r)
        r.daemon.start()
        result = await r.result_for(command["id"])
        assert (result["status"], result["reason"]) == ("failed", "timeout")
        # A re-run would come before the door is polled on: let it poll ten more times.
        polled = r.sim.server.answered
        async with asyncio.timeout(20):
            await r.sim.server.wait_until(lambda: r.sim.server.answered >= polled + 10)
        assert not r.sim.node.pulses


def stored_results(r: Rig) -> int:
    """Results still waiting in the daemon's command store (deleted after PUBACK)."""
    db = sqlite3.connect(r.daemon.config.parent / "data" / "commands.sqlite3")
    try:
        return int(db.execute("SELECT count(*) FROM result").fetchone()[0])
    finally:
        db.close()


async def test_kill_between_finished_and_result_queued_still_answers_once(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    """The bug: "finished" was committed, then the result queued in another file;
    a SIGKILL between the two lost the answer for good. Now they are one commit."""
    async with rig(tmp_path, shared_broker, crash_at="command-finished") as r:
        command = r.command()
        await r.publish(command)
        await killed_at_its_crash_point(r)
        assert [(p.relay, p.tenths) for p in r.sim.node.pulses] == [(1, 20)]  # it did run
        assert not [x for x in r.results() if x["id"] == command["id"]], "sent before the kill?"
        r.daemon.start()  # not armed this time
        result = await r.result_for(command["id"])
        assert (result["status"], result["reason"]) == ("done", None)
        # Sent, PUBACKed and deleted; then another restart and a later command's
        # result, which comes after any resend of ours: still exactly one.
        await wait_until(lambda: stored_results(r) == 0, 20)
        await restart(r)
        ping = r.command(action="gateway.ping", device=r.broker.gateway_id, params={})
        await r.publish(ping)
        assert (await r.result_for(ping["id"]))["status"] == "done"
        assert [x["id"] for x in r.results()].count(command["id"]) == 1
        assert len(r.sim.node.pulses) == 1, "never run again"
        await refused_as_replay(r, command, count=2)


async def test_results_an_older_version_left_in_the_outbox_are_still_sent(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        await stop_cleanly(r)
        # What a version that queued results in the outbox left unsent.
        body = json.dumps({"v": 1, "id": "legacy-1", "status": "done", "reason": None})
        db = sqlite3.connect(r.daemon.database)
        db.execute("INSERT INTO result (topic, correlation, body) VALUES (NULL, NULL, ?)", (body,))
        db.commit()
        db.close()
        r.daemon.start()
        assert (await r.result_for("legacy-1"))["status"] == "done"
        db = sqlite3.connect(r.daemon.database)
        try:
            assert db.execute("SELECT count(*) FROM result").fetchone()[0] == 0
        finally:
            db.close()


HOSTILE = [
    b"\x00\xff\xfe garbage \x80",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"v":1,"id":"a","params":' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
    json.dumps({"v": "one", "id": 7, "gateway": ["x"], "action": None}).encode(),
    b"x" * 200_000,
    b"",
]


async def test_hostile_payloads_are_rejected_and_the_daemon_keeps_serving(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        for payload in HOSTILE:
            await r.publish(payload)
        # The broker never hands over what is over max_payload_bytes + 1 KiB
        # (MQTT 5 Maximum Packet Size): those two get no result at all.
        delivered = [p for p in HOSTILE if len(p) <= 8192]
        await r.sub.wait_for(lambda: len(r.results()) >= len(delivered))
        ok = r.command()
        await r.publish(ok)
        assert (await r.result_for(ok["id"]))["status"] == "done"
        rejected = [x for x in r.results() if x["id"] != ok["id"]]
        assert len(rejected) == len(delivered)
        assert {x["status"] for x in rejected} == {"rejected"}
        assert {x["reason"] for x in rejected} <= {"bad_json", "bad_schema"}
        assert r.daemon.proc is not None and r.daemon.proc.poll() is None


async def test_send_command_wait_prints_done(tmp_path: Path, shared_broker: SharedBroker) -> None:
    async with rig(tmp_path, shared_broker) as r:
        result = await asyncio.to_thread(
            subprocess.run,
            send_command_argv(
                shared_broker.url,
                r.keys / f"{KEY_ID}.pem",
                device="door-east-1",
                params={"hold_seconds": 3},
                gateway_id=shared_broker.gateway_id,
            ),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "done" in result.stdout
        assert [(p.relay, p.tenths) for p in r.sim.node.pulses] == [(1, 30)]
