"""The one place that reaches into aiomqtt's private paho client.

aiomqtt 2.5.1 hides what the uplink needs from paho-mqtt underneath it:

- the PUBACK reason code (aiomqtt ignores it; a broker refusing a publish with
  MQTT 5 "not authorised" must not make us delete readings);
- the socket, to set TCP_NODELAY (paho never does; a result published right
  after our PUBACK of the command would wait ~40 ms for a delayed ACK);
- a publish that returns at once with its message id, so the uplink can keep
  several batches in flight and wait on each PUBACK with its own timeout;
- the CONNACK properties (the broker's Maximum Packet Size);
- the inbound message before aiomqtt converts and queues it, so an oversize
  command is dropped before anything is copied again.

Everything here touches ``client._client`` (a ``paho.mqtt.client.Client``) and
the callbacks aiomqtt installs on it. ``check_private_shape`` fails loudly,
naming what is missing, when an aiomqtt or paho upgrade changed that shape;
the adapter calls it on every client it wraps and a unit test calls it on the
installed version.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_LOGGER = logging.getLogger(__name__)

PUBACK_FAILURE = 0x80  # MQTT 5: reason codes >= 0x80 are failures
# Reason codes that say "too big", not "not allowed": a batch refused with one
# of these is split rather than set aside whole.
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97
SIZE_REFUSALS = frozenset({PACKET_TOO_LARGE, QUOTA_EXCEEDED})

# paho attributes and aiomqtt callbacks the adapter relies on.
_PAHO_ATTRIBUTES = ("socket", "publish", "on_publish", "on_connect", "on_message")
_AIOMQTT_CALLBACKS = ("_on_publish", "_on_connect", "_on_message")


class AiomqttShapeError(RuntimeError):
    """The installed aiomqtt/paho no longer has the private shape this adapter needs."""


class PublishImpossibleError(Exception):
    """paho refuses to even send this message (invalid topic, absurd size)."""


def check_private_shape(client: aiomqtt.Client) -> paho_mqtt.Client:
    """Return the paho client inside ``client``, or raise naming what changed.

    Raises:
        AiomqttShapeError: ``client._client`` is not a paho client, or lacks an
            attribute or callback the adapter wraps.
    """
    paho = getattr(client, "_client", None)
    if not isinstance(paho, paho_mqtt.Client):
        raise AiomqttShapeError(
            f"aiomqtt {aiomqtt.__version__}: Client._client is {type(paho).__name__}, "
            "not a paho.mqtt.client.Client; gateway/uplink/mqtt_adapter.py needs updating"
        )
    missing = [name for name in _PAHO_ATTRIBUTES if not hasattr(paho, name)]
    missing += [
        f"aiomqtt.Client.{name}" for name in _AIOMQTT_CALLBACKS if not hasattr(client, name)
    ]
    if missing:
        raise AiomqttShapeError(
            f"aiomqtt {aiomqtt.__version__} / paho: missing {', '.join(missing)}; "
            "gateway/uplink/mqtt_adapter.py needs updating"
        )
    return paho


def set_nodelay(client: aiomqtt.Client) -> None:
    """Send small MQTT packets at once instead of waiting out Nagle's algorithm."""
    _set_nodelay(check_private_shape(client))


def _set_nodelay(paho: paho_mqtt.Client) -> None:
    sock = paho.socket()
    if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (a unix socket): nothing to do
        _LOGGER.debug("TCP_NODELAY not set: %s", exc)


def publish_properties() -> Properties:
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here


def connect_properties() -> Properties:
    return Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]


def _varint_len(value: int) -> int:
    length = 1
    while value >= 128:
        value //= 128
        length += 1
    return length


def publish_packet_size(
    topic: str, payload: bytes, properties: Properties | None, *, v5: bool
) -> int:
    """Bytes of the QoS 1 PUBLISH packet paho will send (what Maximum Packet Size limits)."""
    props = 0
    if v5:
        packed = properties.pack() if properties is not None else b"\x00"  # type: ignore[no-untyped-call]
        props = len(packed)
    remaining = 2 + len(topic.encode("utf-8")) + 2 + props + len(payload)
    return 1 + _varint_len(remaining) + remaining


class PahoAdapter:
    """Wraps one aiomqtt client for the uplink (one per connection).

    Args:
        client: a not yet connected ``aiomqtt.Client``.
        max_inbound_bytes: larger inbound payloads are dropped before aiomqtt
            queues them; ``on_oversize(topic, size)`` is told.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        *,
        max_inbound_bytes: int,
        on_oversize: Callable[[str, int], None],
    ) -> None:
        self._paho = check_private_shape(client)
        self._acks: dict[int, asyncio.Future[int]] = {}
        self.broker_max_packet: int | None = None
        """The broker's Maximum Packet Size from CONNACK (MQTT 5), None when unlimited."""
        self._wrap_on_connect()
        self._wrap_on_publish()
        self._wrap_on_message(max_inbound_bytes, on_oversize)

    # ------------------------------------------------------------ callbacks

    def _wrap_on_connect(self) -> None:
        original = self._paho.on_connect

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            size = getattr(props, "MaximumPacketSize", None) if props is not None else None
            self.broker_max_packet = int(size) if size else None
            if original is not None:
                cast(Any, original)(c, userdata, flags, reason, props)

        self._paho.on_connect = on_connect

    def _wrap_on_publish(self) -> None:
        original = self._paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            future = self._acks.pop(mid, None)
            if future is not None and not future.done():
                future.set_result(int(getattr(reason, "value", 0) or 0))
            if original is not None:
                cast(Any, original)(c, userdata, mid, reason, props)

        self._paho.on_publish = on_publish

    def _wrap_on_message(self, max_bytes: int, on_oversize: Callable[[str, int], None]) -> None:
        original = self._paho.on_message

        def on_message(c: Any, userdata: Any, message: paho_mqtt.MQTTMessage) -> None:
            # Before aiomqtt wraps and queues it: an oversize payload goes no further.
            size = len(message.payload)
            if size > max_bytes:
                on_oversize(message.topic, size)
                return
            if original is not None:
                cast(Any, original)(c, userdata, message)

        self._paho.on_message = on_message

    # ---------------------------------------------------------------- calls

    def set_nodelay(self) -> None:
        _set_nodelay(self._paho)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        timeout_s: float,
    ) -> int:
        """Publish at QoS 1; return the PUBACK reason code (0 on MQTT 3.1.1).

        Raises:
            PublishImpossibleError: paho will not send it at all (bad topic, size).
            aiomqtt.MqttCodeError: not connected.
            TimeoutError: no PUBACK within ``timeout_s``.
        """
        try:
            info = self._paho.publish(topic, payload, 1, retain, properties)
        except ValueError as exc:
            raise PublishImpossibleError(str(exc)) from exc
        if info.rc != paho_mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._acks.pop(info.mid, None)

    def fail_pending(self) -> None:
        """The connection is gone: no PUBACK will come for what is in flight."""
        for future in self._acks.values():
            if not future.done():
                future.cancel()
        self._acks.clear()
