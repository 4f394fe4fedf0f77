"""The MQTT client's inbound queue, with access-list messages handed over as they are read.

aiomqtt's client reads one packet per event-loop turn, and the receive loop
(``async for message in client.messages``) takes one message per three
turns, so a burst grows the client's queue. For commands that is a few
bytes; for access lists it is the daemon's memory: a persistent session
catching up delivers a whole snapshot at once (40 parts of half a MiB for
200,000 cards, up to 1,000 parts of 1 MiB by the contract). So the queue
(aiomqtt's ``queue_type``) gives an access message to ``take`` the moment
the client has read it, which writes it to the access inbox on disk
(``gateway.access.inbox``) and keeps nothing in memory. Every other message
is queued as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiomqtt

_LOGGER = logging.getLogger(__name__)


def access_first_queue(
    topic: str, take: Callable[[bytes], None]
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for ``aiomqtt.Client(queue_type=...)`` that passes ``topic`` to ``take``."""

    class AccessFirstQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if not item.topic.matches(topic):
                super().put_nowait(item)
                return
            payload = item.payload
            try:
                take(bytes(payload) if isinstance(payload, bytes | bytearray) else b"")
            except Exception:  # called inside the client's read: it must not fail
                _LOGGER.exception("access message not taken: topic=%s", item.topic)

    return AccessFirstQueue
