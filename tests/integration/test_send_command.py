"""send-command against a real mosquitto: signed payload, expiry, response topic, exit codes.

The platform side of each test is a plain aiomqtt client; the gateway side of
the round trip is the real ``CommandProcessor`` (verify, store, audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.base import SystemClock
from gateway.cli.operator_tools import (
    EXIT_MQTT,
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_TIMEOUT,
    keygen,
    send_command,
)
from gateway.commands.inbound import InboundCommand
from gateway.commands.model import CommandsConfig
from gateway.commands.processor import CommandProcessor
from gateway.commands.store import CommandStore
from gateway.commands.verify import CommandVerifier
from gateway.outbox.store import Lane
from tests.broker import SharedBroker, free_port
from tests.fakes import RecordingSink

pytestmark = pytest.mark.integration

SITE = "changqing"


@dataclass
class Inbox:
    messages: list[aiomqtt.Message] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, predicate: Callable[[aiomqtt.Message], bool]) -> aiomqtt.Message:
        async with asyncio.timeout(5):
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                self.arrived.clear()
                await self.arrived.wait()


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a helper task and wait for it, without swallowing our own cancellation."""
    task.cancel()
    await asyncio.wait([task])


@contextlib.asynccontextmanager
async def listening(port: int, topic: str) -> AsyncIterator[tuple[aiomqtt.Client, Inbox]]:
    """An MQTT 5 client subscribed to ``topic`` before the test goes on."""
    inbox = Inbox()
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                inbox.messages.append(message)
                inbox.arrived.set()

        task = asyncio.create_task(collect(), name="test-listener")
        try:
            yield client, inbox
        finally:
            await stop(task)


def config_for(public_line: str, gateway_id: str) -> CommandsConfig:
    key_id, _, public_b64 = public_line.partition(": ")
    return CommandsConfig.model_validate(
        {
            "public_keys": {key_id: public_b64},
            "permissions": {gateway_id: {"actions": ["gateway.ping"], "key_ids": [key_id]}},
        }
    )


def send_args(broker_url: str, keys: Path, gateway_id: str, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "broker": broker_url,
        "key_file": keys / "ops.pem",
        "key_id": "ops",
        "site": SITE,
        "gateway": gateway_id,
        "action": "gateway.ping",
        "device": gateway_id,
        "params": {},
        "ttl_s": 20.0,
        "timeout_s": 5.0,
        "out": io.StringIO(),
        "err": io.StringIO(),
    }
    args.update(overrides)
    return args


class NoneSeen:
    def is_seen(self, command_id: str) -> bool:
        return False


async def test_publishes_a_signed_command_with_expiry(
    shared_broker: SharedBroker, tmp_path: Path
) -> None:
    line = keygen(tmp_path, key_id="ops")
    share = shared_broker
    async with listening(share.port, f"{share.root}/commands") as (_, inbox):
        code = await send_command(
            **send_args(share.url, tmp_path, share.gateway_id, command_id="cmd-int-1")
        )
        assert code == EXIT_OK
        async with asyncio.timeout(5):
            await inbox.arrived.wait()
    [message] = inbox.messages
    assert message.qos == 1
    assert message.properties is not None
    expiry = getattr(message.properties, "MessageExpiryInterval", None)
    assert expiry is not None
    assert 15 <= expiry <= 20
    assert not hasattr(message.properties, "ResponseTopic")  # only with --wait

    verifier = CommandVerifier(
        config_for(line, share.gateway_id),
        gateway_id=share.gateway_id,
        device_actions={},
        seen=NoneSeen(),
        clock=SystemClock(),
    )
    assert isinstance(message.payload, bytes)
    verified = verifier.verify(message.payload)
    assert (verified.id, verified.action, verified.device) == (
        "cmd-int-1",
        "gateway.ping",
        share.gateway_id,
    )
    assert verified.expires_at - verified.issued_at == pytest.approx(20.0)


@contextlib.asynccontextmanager
async def gateway(
    share: SharedBroker, config: CommandsConfig, data_dir: Path
) -> AsyncIterator[asyncio.Event]:
    """A minimal gateway: commands in, ``CommandProcessor``, results out on both topics.

    Yields an event set each time a command's results are all published; tests
    wait for it before leaving, so the serving task is never cancelled inside a
    publish (Python 3.11's ``wait_for``, under aiomqtt's publish, can swallow
    a cancellation that races with the PUBACK).
    """
    store = CommandStore.open(data_dir, clock=SystemClock())
    served = asyncio.Event()
    processor = CommandProcessor(
        config,
        gateway_id=share.gateway_id,
        drivers={},
        store=store,
        readings=RecordingSink(),
        clock=SystemClock(),
        response_prefix=f"{share.root}/commands/results/",
    )

    async def serve(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            props = message.properties
            assert isinstance(message.payload, bytes)
            await processor.process(
                InboundCommand(
                    payload=message.payload,
                    response_topic=getattr(props, "ResponseTopic", None),
                    correlation_data=getattr(props, "CorrelationData", None),
                    received_mono=time.monotonic(),
                )
            )
            # The uplink's way: durable results from the store, deleted once sent.
            while (batch := await store.results.fetch(Lane.RESULT, 0, 1, 1 << 20)) is not None:
                if batch.topic is None:
                    await client.publish(f"{share.root}/commands/results", batch.bodies[0], qos=1)
                else:
                    reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    if batch.correlation is not None:
                        reply.CorrelationData = batch.correlation
                    await client.publish(batch.topic, batch.bodies[0], qos=1, properties=reply)
                store.results.ack(batch)
            served.set()

    try:
        async with aiomqtt.Client(
            "127.0.0.1", share.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.subscribe(f"{share.root}/commands", qos=1)
            task = asyncio.create_task(serve(client), name="test-gateway")
            try:
                yield served
            finally:
                await stop(task)
    finally:
        store.close()


async def test_wait_round_trip_through_the_processor(
    shared_broker: SharedBroker, tmp_path: Path
) -> None:
    line = keygen(tmp_path / "keys", key_id="ops")
    out = io.StringIO()
    share = shared_broker
    async with (
        gateway(share, config_for(line, share.gateway_id), tmp_path / "data") as served,
        listening(share.port, f"{share.root}/commands/results/#") as (_, replies),
    ):
        code = await send_command(
            **send_args(
                share.url,
                tmp_path / "keys",
                share.gateway_id,
                wait=True,
                command_id="cmd-int-2",
                out=out,
            )
        )
        async with asyncio.timeout(5):
            await served.wait()
        # The reply also went to the sender's own response topic, with its correlation data.
        reply = await replies.wait_for(lambda m: m.topic.value != f"{share.root}/commands/results")
    assert code == EXIT_OK, out.getvalue()
    printed = out.getvalue()
    result_line = next(x for x in printed.splitlines() if x.startswith("result: "))
    result = json.loads(result_line.removeprefix("result: "))
    assert (result["id"], result["status"], result["device"]) == (
        "cmd-int-2",
        "done",
        share.gateway_id,
    )
    assert "round-trip: " in printed
    assert reply.properties is not None
    assert getattr(reply.properties, "CorrelationData", None) == b"cmd-int-2"


async def test_rejected_result_exits_non_zero(shared_broker: SharedBroker, tmp_path: Path) -> None:
    line = keygen(tmp_path / "keys", key_id="ops")
    share = shared_broker
    async with gateway(share, config_for(line, share.gateway_id), tmp_path / "data") as served:
        code = await send_command(
            **send_args(
                share.url, tmp_path / "keys", share.gateway_id, wait=True, device="door-nowhere"
            )
        )
        async with asyncio.timeout(5):
            await served.wait()
    assert code == EXIT_NOT_DONE


async def test_no_answer_times_out(shared_broker: SharedBroker, tmp_path: Path) -> None:
    keygen(tmp_path, key_id="ops")
    err = io.StringIO()
    args = send_args(
        shared_broker.url, tmp_path, shared_broker.gateway_id, wait=True, timeout_s=0.3, err=err
    )
    code = await send_command(**args)
    assert code == EXIT_TIMEOUT
    assert "no result" in err.getvalue()


async def test_unreachable_broker(tmp_path: Path) -> None:
    keygen(tmp_path, key_id="ops")
    err = io.StringIO()
    # Nothing listens on a free port.
    args = send_args(f"mqtt://127.0.0.1:{free_port()}", tmp_path, "north-gate-1", err=err)
    assert await send_command(**args) == EXIT_MQTT
    assert "MQTT" in err.getvalue()
