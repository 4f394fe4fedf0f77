"""Access lists end to end: real daemon, real mosquitto, door simulator on a pty.

The platform side (signing, splitting, publishing) is this test; the daemon
keeps the list in ``access.sqlite3`` and decides each swipe with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.door_node import DoorNodeSimulator
from gateway.access.build import card, delta_message, sign, snapshot_messages
from gateway.access.digest import EMPTY_DIGEST, digest_of_list
from gateway.cli.operator_tools import load_private_key
from tests.broker import Mosquitto
from tests.daemon import REPO, Daemon, write_config
from tests.door_daemon import operator_keys, running, start_door_sim
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration

ROOT = "estates/changqing/gateways/north-gate-1"
GW = "north-gate-1"
KEY_ID = "platform-2026"
OTHER_KEY_ID = "maintenance"  # a known key, not allowed to write access lists
DOOR = "door-east-1"
RESIDENT = "04A1B2C3"


@dataclass
class Rig:
    daemon: Daemon
    sim: DoorNodeSimulator
    sub: Subscriber
    broker: Mosquitto
    keys: Path

    def key(self, key_id: str = KEY_ID) -> Any:
        return load_private_key(self.keys / f"{key_id}.pem")

    def snapshot(
        self, cards: list[dict[str, Any]], version: int, *, part_size: int = 5000, **kw: Any
    ) -> list[dict[str, Any]]:
        return snapshot_messages(
            cards,
            kw.pop("profiles", {}),
            gateway=kw.pop("gateway", GW),
            version=version,
            key=self.key(kw.pop("key_id", KEY_ID)),
            key_id=KEY_ID,
            issued_at=time.time(),
            part_size=part_size,
        )

    def delta(self, base: int, version: int, upsert: list[dict[str, Any]], **kw: Any):
        key_id = kw.pop("key_id", KEY_ID)
        return delta_message(
            gateway=kw.pop("gateway", GW),
            base=base,
            version=version,
            upsert=upsert,
            delete=kw.pop("delete", []),
            key=self.key(key_id),
            key_id=key_id,
            issued_at=time.time(),
        )

    async def publish(self, *payloads: bytes | dict[str, Any]) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port) as client:
            for payload in payloads:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                await client.publish(f"{ROOT}/access", body, qos=1)

    def states(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.on("access/state")]

    async def state_where(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        await self.sub.wait_for(lambda: any(predicate(s) for s in self.states()))
        return next(s for s in self.states() if predicate(s))

    def changes(self) -> list[dict[str, Any]]:
        return [r["data"] for r in self.sub.readings() if r["type"] == "access.changed"]

    def decisions(self) -> list[dict[str, Any]]:
        return [
            r["data"]
            for r in self.sub.readings()
            if r["type"] == "door.event" and r["data"]["event"] in {"granted", "denied"}
        ]

    async def swipe(self, card_id: str) -> dict[str, Any]:
        """Present a card at the door; the decision event the gateway sent up."""
        before = len(self.decisions())
        self.sim.node.present_card(card_id)
        await self.sub.wait_for(lambda: len(self.decisions()) > before)
        return self.decisions()[before]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[Rig]:
    keys = tmp_path / "keys"
    public = operator_keys(keys, KEY_ID, OTHER_KEY_ID)
    sim, door = await start_door_sim(tmp_path / "sim", DOOR)
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=[broker.url],
        devices=[door],
        gateway={
            "site": "changqing",
            "id": GW,
            "data_dir": "data",
            "timezone": "Asia/Shanghai",
        },
        commands={"public_keys": public},
        access={"source": "platform", "key_ids": [KEY_ID]},
    )
    sub = Subscriber(broker.port, ROOT)
    daemon = Daemon(config)
    async with running(daemon, sub, sim):
        the_rig = Rig(daemon, sim, sub, broker, keys)
        await wait_ready(the_rig)
        yield the_rig


async def wait_ready(r: Rig, since: int = 0) -> None:
    """The access state published (the subscription to access precedes it) and the door polled."""
    await r.sub.wait_for(lambda: len(r.sub.on("access/state")) > since)
    await r.sub.wait_for(
        lambda: any(
            x["type"] == "device.status" and x["data"]["state"] == "online"
            for x in r.sub.readings()
        )
    )


RESIDENTS = [card(f"04A1B2{i:02X}", holder=f"r-{i}") for i in range(0xC0, 0xC9)]


async def test_snapshot_in_three_parts_applies_when_complete_and_again_is_ignored(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with rig(tmp_path, broker) as r:
        first = r.states()[0]
        assert (first["version"], first["cards"], first["digest"]) == (0, 0, EMPTY_DIGEST)
        assert first["pending"] is None and first["last_error"] is None
        parts = r.snapshot(RESIDENTS, 5, part_size=3)
        await r.publish(parts[0], parts[2])
        await r.state_where(lambda s: (s["pending"] or {}).get("received") == 2)
        denied = await r.swipe(RESIDENT)
        assert (denied["event"], denied["reason"], denied["list_version"]) == (
            "denied",
            "not_listed",
            0,
        )
        assert not r.sim.node.pulses
        await r.publish(parts[1])
        state = await r.state_where(lambda s: s["version"] == 5)
        digest = digest_of_list(RESIDENTS, {})
        assert state["cards"] == 9 and state["digest"] == digest and state["pending"] is None
        await r.sub.wait_for(lambda: bool(r.changes()))
        assert r.changes() == [
            {
                "from_version": 0,
                "to_version": 5,
                "upserts": 9,
                "deletes": 0,
                "cards": 9,
                "digest": digest,
            }
        ]
        granted = await r.swipe(RESIDENT)
        assert (granted["event"], granted["reason"], granted["list_version"]) == (
            "granted",
            "listed",
            5,
        )
        await r.sub.wait_for(lambda: bool(r.sim.node.pulses))
        await r.sub.wait_for(
            lambda: any(
                m.json().get("access") == {"version": 5, "cards": 9, "digest": digest}
                for m in r.sub.on("status")
            )
        )
        # The same snapshot again: ignored, counted, nothing changes.
        await r.publish(*parts)
        state = await r.state_where(lambda s: s["ignored"] == 3)
        assert state["version"] == 5 and state["digest"] == digest and state["pending"] is None
        assert len(r.changes()) == 1


async def test_parts_survive_a_restart_and_superseded_parts_are_discarded(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with rig(tmp_path, broker) as r:
        v3 = r.snapshot(RESIDENTS, 3, part_size=5)
        await r.publish(v3[0])
        await r.state_where(lambda s: s["pending"] == {"version": 3, "parts": 2, "received": 1})
        r.daemon.kill()
        seen = len(r.states())
        r.daemon.start()
        await wait_ready(r, since=seen)
        assert r.states()[-1]["pending"] == {"version": 3, "parts": 2, "received": 1}
        await r.publish(v3[1])
        await r.state_where(lambda s: s["version"] == 3 and s["cards"] == 9)
        # v5 begins, v4 completes before it: v5's part stays, v4 applies, v5 goes on.
        v5 = r.snapshot(RESIDENTS[:4], 5, part_size=2)
        (v4,) = r.snapshot(RESIDENTS[:1], 4)
        await r.publish(v5[0])
        await r.state_where(lambda s: (s["pending"] or {}).get("version") == 5)
        await r.publish(v4)
        state = await r.state_where(lambda s: s["ignored"] == 1)
        assert state["version"] == 3, "v4 is below the gathering v5: its part is superseded"
        await r.publish(v5[1])
        state = await r.state_where(lambda s: s["version"] == 5)
        assert state["cards"] == 4 and state["pending"] is None


async def test_delta_on_its_base_applies_and_on_another_is_refused(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with rig(tmp_path, broker) as r:
        await r.publish(*r.snapshot(RESIDENTS, 41))
        await r.state_where(lambda s: s["version"] == 41)
        newcomer = card("0BADCAFE", holder="r-new")
        good = r.delta(41, 42, [newcomer], delete=[RESIDENT])
        await r.publish(good)
        state = await r.state_where(lambda s: s["version"] == 42)
        expected = [c for c in RESIDENTS if c["card"] != RESIDENT] + [newcomer]
        assert state["digest"] == digest_of_list(expected, {})
        assert (await r.swipe(RESIDENT))["reason"] == "not_listed"
        assert (await r.swipe("0BADCAFE"))["list_version"] == 42
        await r.publish(r.delta(40, 43, [card(RESIDENT)]))
        state = await r.state_where(lambda s: s["last_error"] is not None)
        assert state["last_error"]["reason"] == "base_mismatch"
        assert state["last_error"]["version"] == 43 and state["version"] == 42
        # The old delta replayed: ignored, nothing changes, the error stays.
        await r.publish(good)
        state = await r.state_where(lambda s: s["ignored"] == 1)
        assert state["version"] == 42 and state["last_error"]["reason"] == "base_mismatch"
        assert (await r.swipe(RESIDENT))["reason"] == "not_listed"
        changes = r.changes()
        assert [(c["from_version"], c["to_version"]) for c in changes] == [(0, 41), (41, 42)]
        assert (changes[1]["upserts"], changes[1]["deletes"]) == (1, 1)


def refused_payload(r: Rig, reason: str) -> bytes | dict[str, Any]:
    grant = [card(RESIDENT)]
    if reason == "bad_signature":
        forged = r.delta(0, 1, grant)
        forged["upsert"] = [card("0EE1")]  # changed after signing
        return forged
    if reason == "unknown_key":
        message = r.delta(0, 1, grant)
        message["key_id"] = "nobody"
        return sign(message, load_private_key(r.keys / f"{KEY_ID}.pem"))
    if reason == "not_permitted":
        return r.delta(0, 1, grant, key_id=OTHER_KEY_ID)
    if reason == "wrong_gateway":
        return r.delta(0, 1, grant, gateway="south-gate-2")
    if reason == "bad_json":
        return b'{"v": 1, "type": "access.delta"'
    if reason == "too_large":
        message = r.delta(0, 1, grant)
        body = json.dumps(message)
        return (body[:-1] + "," + '"pad": "' + "x" * (1024 * 1024) + '"}').encode()
    raise AssertionError(reason)


@pytest.mark.parametrize(
    ("reason", "version"),
    [
        ("bad_signature", 1),
        ("unknown_key", 1),
        ("not_permitted", 1),
        ("wrong_gateway", 1),
        ("bad_json", None),
        ("too_large", None),
    ],
)
async def test_each_refusal_leaves_the_list_and_the_door_alone(
    tmp_path: Path, broker: Mosquitto, reason: str, version: int | None
) -> None:
    async with rig(tmp_path, broker) as r:
        await r.publish(refused_payload(r, reason))
        state = await r.state_where(lambda s: s["last_error"] is not None)
        assert state["last_error"]["reason"] == reason
        assert state["last_error"]["version"] == version
        assert (state["version"], state["cards"], state["digest"]) == (0, 0, EMPTY_DIGEST)
        denied = await r.swipe(RESIDENT)
        assert (denied["event"], denied["reason"]) == ("denied", "not_listed")
        assert not r.sim.node.pulses
        assert not r.changes()


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def test_access_push_and_access_show(tmp_path: Path, broker: Mosquitto) -> None:
    async with rig(tmp_path, broker) as r:
        snapshot = tmp_path / "list.csv"
        snapshot.write_text(
            "card,holder,doors,from,until,profile\n"
            f"{RESIDENT},r-1,door-east-1;door-west-1,,2099-01-01T00:00:00.000Z,\n"
            "0B0B,r-2,,,,\n",
            encoding="utf-8",
        )
        common = [
            "--broker", broker.url, "--key", str(r.keys / f"{KEY_ID}.pem"),
            "--key-id", KEY_ID, "--site", "changqing", "--gateway", GW, "--timeout", "20",
        ]  # fmt: skip
        code, out = await run_cli(
            "access-push", *common, "--snapshot", str(snapshot), "--version", "3"
        )
        assert code == 0, out
        assert "applied: version 3, 2 cards" in out
        delta = tmp_path / "delta.json"
        delta.write_text(json.dumps({"upsert": [card("0C0C")], "delete": ["0B0B"]}))
        code, out = await run_cli(
            "access-push", *common, "--delta", str(delta), "--base", "1", "--version", "4"
        )
        assert code == 1 and "refused: base_mismatch" in out, out
        code, out = await run_cli(
            "access-push", *common, "--delta", str(delta), "--base", "3", "--version", "4"
        )
        assert code == 0 and "applied: version 4, 2 cards" in out, out
        state = r.states()[-1]
        assert state["digest"] == digest_of_list(
            [
                card(RESIDENT, holder="r-1", doors=["door-east-1", "door-west-1"],
                     until="2099-01-01T00:00:00.000Z"),
                card("0C0C"),
            ],
            {},
        )  # fmt: skip
        code, out = await run_cli(
            "access-show", "-c", str(r.daemon.config), "--card", "00" + RESIDENT
        )
        assert code == 0, out
        assert "version  4" in out and f"digest   {state['digest']}" in out
        assert f"door {DOOR}: granted (listed)" in out
        code, out = await run_cli("access-show", "-c", str(r.daemon.config), "--card", "0B0B")
        assert f"door {DOOR}: denied (not_listed)" in out
