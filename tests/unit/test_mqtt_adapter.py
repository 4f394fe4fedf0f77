"""The aiomqtt adapter: fails loudly when aiomqtt's private shape changes; sizes packets right."""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho_mqtt
import pytest

from gateway.uplink.mqtt_adapter import (
    AiomqttShapeError,
    PahoAdapter,
    check_private_shape,
    publish_packet_size,
    publish_properties,
)


async def test_installed_aiomqtt_has_the_private_shape_the_adapter_needs() -> None:
    client = aiomqtt.Client("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
    paho = check_private_shape(client)
    assert isinstance(paho, paho_mqtt.Client)
    # The adapter wraps aiomqtt's own callbacks (it must still call them).
    before = (paho.on_connect, paho.on_publish, paho.on_message)
    PahoAdapter(client, max_inbound_bytes=100, on_oversize=lambda topic, size: None)
    after = (paho.on_connect, paho.on_publish, paho.on_message)
    assert all(a is not b for a, b in zip(before, after, strict=True))


async def test_a_changed_shape_is_named_not_hit_later() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    client._client = object()  # type: ignore[assignment]  # what a refactor might leave
    with pytest.raises(AiomqttShapeError, match=r"mqtt_adapter\.py needs updating"):
        PahoAdapter(client, max_inbound_bytes=100, on_oversize=lambda topic, size: None)


async def test_a_missing_paho_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    monkeypatch.delattr(paho_mqtt.Client, "on_message")  # as if a paho release renamed it
    with pytest.raises(AiomqttShapeError, match="on_message"):
        check_private_shape(client)


async def test_oversize_inbound_message_is_dropped_before_aiomqtt_queues_it() -> None:
    client = aiomqtt.Client("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
    seen: list[tuple[str, int]] = []
    PahoAdapter(client, max_inbound_bytes=10, on_oversize=lambda t, n: seen.append((t, n)))
    paho = client._client
    for payload in (b"x" * 11, b"x" * 10):
        message = paho_mqtt.MQTTMessage(topic=b"r/commands")
        message.payload = payload
        paho.on_message(paho, None, message)  # type: ignore[misc]
    assert seen == [("r/commands", 11)]
    assert client._queue.qsize() == 1  # aiomqtt's queue holds only the small one


@pytest.mark.parametrize("payload_len", [0, 100, 126, 127, 16_383, 16_384, 70_000])
def test_publish_packet_size_matches_what_paho_sends(payload_len: int) -> None:
    props = publish_properties()
    props.CorrelationData = b"corr"
    payload = b"x" * payload_len
    for v5, properties in ((True, props), (True, None), (False, None)):
        paho = paho_mqtt.Client(
            paho_mqtt.CallbackAPIVersion.VERSION2,
            protocol=paho_mqtt.MQTTv5 if v5 else paho_mqtt.MQTTv311,
        )
        sent: list[bytes] = []

        def capture(
            command: int, packet: bytes, *args: object, sent: list[bytes] = sent, **kw: object
        ) -> int:
            sent.append(bytes(packet))
            return 0

        paho._packet_queue = capture  # type: ignore[method-assign,assignment]
        paho._sock = object()  # type: ignore[assignment]  # "connected"
        paho._send_publish(1, b"a/b/c", payload, 1, False, False, None, properties)
        paho._sock = None
        assert publish_packet_size("a/b/c", payload, properties, v5=v5) == len(sent[0])
