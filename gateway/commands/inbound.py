"""One inbound command message, from the uplink to the processor, and where its result may go.

The uplink builds an ``InboundCommand`` for each message on ``{root}/commands``
and hands it on unexamined. Whether the MQTT 5 response topic is honoured is
decided here, by ``reply_for``, and only for a command whose signature verified
(CONTRACT.md 1.1, "Commands"): a valid topic name (no wildcards, at most 256
bytes) under the configured prefix (default ``{root}/commands/results/``), with
correlation data of at most 256 bytes; otherwise the result goes to the results
topic alone. Before that, an unsigned message could make the gateway publish
anywhere its broker credentials allow.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RESPONSE_TOPIC_BYTES = 256
MAX_CORRELATION_BYTES = 256
DEFAULT_RESPONSE_PREFIX = "{root}/commands/results/"


@dataclass(frozen=True, slots=True)
class InboundCommand:
    """One message from ``{root}/commands``, as received.

    ``received_mono`` is the monotonic time it arrived (latency is measured from it).
    """

    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    received_mono: float


@dataclass(frozen=True, slots=True)
class Reply:
    """Where a result also goes: an honoured MQTT 5 response topic and its correlation data."""

    response_topic: str | None = None
    correlation_data: bytes | None = None


NO_REPLY = Reply()


def valid_response_topic(topic: str, prefix: str) -> bool:
    """Whether ``topic`` is a publishable topic name strictly under ``prefix``."""
    return (
        len(topic.encode("utf-8", "surrogatepass")) <= MAX_RESPONSE_TOPIC_BYTES
        and topic.startswith(prefix)
        and len(topic) > len(prefix)
        and not any(c in topic for c in "#+\x00")
        and topic.isprintable()
    )


def reply_for(inbound: InboundCommand, prefix: str) -> Reply:
    """The reply of a command whose signature verified (call it for no other)."""
    topic = inbound.response_topic
    if topic is None or not valid_response_topic(topic, prefix):
        return NO_REPLY
    correlation = inbound.correlation_data
    if correlation is not None and len(correlation) > MAX_CORRELATION_BYTES:
        return NO_REPLY
    return Reply(topic, correlation)
