"""The platform's link to the RabbitMQ cluster: failover connect, the ingest queue, publishing.

Gateways speak MQTT to the cluster; RabbitMQ's MQTT plugin maps each topic
onto the ``amq.topic`` exchange with ``/`` turned into ``.``. The platform
reads through one durable quorum queue bound to the gateway-to-platform
topics (replicated on every node: a node loss loses nothing that was
PUBACKed, because the MQTT plugin sends the PUBACK only once the queue has
confirmed the message) and writes to the platform-to-gateway topics on the
same exchange, persistent and confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

_LOGGER = logging.getLogger(__name__)

EXCHANGE = "amq.topic"
INGEST_QUEUE = "estate.central.ingest"
# Gateway-to-platform topics (CONTRACT.md "Identity and topics"), as routing keys.
INGEST_KINDS = ("readings", "alarms", "status", "access.state", "commands.results")
CONNECT_TIMEOUT_S = 5.0


def routing_key(topic: str) -> str:
    """The AMQP routing key RabbitMQ's MQTT plugin uses for an MQTT topic."""
    return topic.replace("/", ".")


async def connect(urls: Sequence[str], *, start: int = 0) -> tuple[AbstractRobustConnection, int]:
    """Connect to the first node that answers, trying each from ``start``.

    Returns the connection and the index of the node. Raises the last
    connection error when none answers.
    """
    last: BaseException | None = None
    for offset in range(len(urls)):
        index = (start + offset) % len(urls)
        try:
            conn = await aio_pika.connect(urls[index], timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            last = exc
            _LOGGER.info("amqp node not reachable: index=%d error=%r", index, exc)
            continue
        return conn, index  # type: ignore[return-value]  # a plain Connection, never robust
    assert last is not None
    raise last


async def declare_ingest(
    channel: AbstractChannel, *, queue_name: str = INGEST_QUEUE, site: str = "*"
) -> AbstractQueue:
    """The durable quorum queue every ingest worker consumes (idempotent).

    ``site`` limits it to one estate's gateways (``*``: every estate).
    """
    queue = await channel.declare_queue(
        queue_name, durable=True, arguments={"x-queue-type": "quorum"}
    )
    for kind in INGEST_KINDS:
        await queue.bind(EXCHANGE, f"estates.{site}.gateways.*.{kind}")
    return queue


async def publish(channel: AbstractChannel, topic: str, body: bytes) -> None:
    """Publish to a gateway topic, persistent; returns once the broker confirmed it.

    ``x-mqtt-publish-qos`` makes the MQTT plugin deliver it at QoS 1.
    """
    exchange = await channel.get_exchange(EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"x-mqtt-publish-qos": 1},
            content_type="application/json",
        ),
        routing_key=routing_key(topic),
    )


async def sleep_backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
