"""``estate-central open GATE DOOR``: sign a ``door.open``, send it, wait for its result.

Signing is the operator tool's (gateway/cli/operator_tools.py: the command
object, its Ed25519 signature over the canonical form, the payload); only
the transport differs. RabbitMQ's MQTT is 3.1.1: no response topic and no
message expiry (CONTRACT.md "Commands"), so the command goes to the gate's
``commands`` topic through ``amq.topic`` and the result is read from
``commands/results`` by a private queue bound *before* the command is sent.
The gateway itself refuses a command past ``expires_at``, which stands in for
the broker-side expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from central import amqp
from gateway.cli.operator_tools import CommandOrder, encode_command, load_private_key
from gateway.uplink.broker import topic_root

OPEN_TTL_S = 30.0
"""Lifetime of an ``open`` command: the gateway refuses it after that."""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command_id: str
    result: dict[str, Any] | None  # None: no result within the timeout
    round_trip_ms: float | None


async def send_and_wait(
    amqp_urls: Sequence[str],
    order: CommandOrder,
    *,
    key_file: Path | str,
    site: str,
    timeout_s: float = 10.0,
) -> CommandOutcome:
    """Sign and publish one command, then wait for the result with its id.

    Raises:
        OSError, ValueError: the key cannot be read.
        aio_pika.exceptions.AMQPError, OSError: no broker node could be reached.
    """
    private_key = load_private_key(key_file)
    command_id = str(uuid.uuid4())
    root = topic_root(site, order.gateway)
    command = order.signed(private_key, command_id=command_id, issued_at=time.time())
    conn, _ = await amqp.connect(amqp_urls)
    async with conn:
        channel = await conn.channel()
        results = await channel.declare_queue(exclusive=True, auto_delete=True)
        await results.bind(amqp.EXCHANGE, amqp.routing_key(f"{root}/commands/results"))
        found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def on_result(message: AbstractIncomingMessage) -> None:
            await message.ack()
            with contextlib.suppress(ValueError):
                doc = json.loads(message.body)
                if isinstance(doc, dict) and doc.get("id") == command_id and not found.done():
                    found.set_result(doc)

        await results.consume(on_result)
        sent = time.monotonic()
        await amqp.publish(channel, f"{root}/commands", encode_command(command))
        try:
            async with asyncio.timeout(timeout_s):
                result = await found
        except TimeoutError:
            return CommandOutcome(command_id, None, None)
        return CommandOutcome(command_id, result, (time.monotonic() - sent) * 1000)
