"""What the gateways publish, as the platform reads it (CONTRACT.md "Readings", "Status",
"Access lists: State", "Commands").

RabbitMQ's MQTT plugin turns the topic ``estates/S/gateways/G/readings`` into
the routing key ``estates.S.gateways.G.readings`` on ``amq.topic``; ``route``
reads the site, gateway and kind back from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec

# The contract's one timestamp form; anything else would fail a timestamptz cast.
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", re.ASCII)


def contract_ts(value: object) -> str | None:
    """``value`` when it is a contract timestamp, else None."""
    return value if isinstance(value, str) and _TS_RE.fullmatch(value) else None


class Kind(StrEnum):
    READINGS = "readings"
    ALARMS = "alarms"
    STATUS = "status"
    ACCESS_STATE = "access.state"
    RESULT = "commands.results"


class WireError(ValueError):
    """A message the platform cannot read; kept in ``rejected`` with this reason."""


@dataclass(frozen=True, slots=True)
class Route:
    site: str
    gateway: str
    kind: Kind


def route(routing_key: str) -> Route:
    """Site, gateway and kind from ``estates.S.gateways.G.<kind>``."""
    parts = routing_key.split(".")
    if len(parts) < 5 or parts[0] != "estates" or parts[2] != "gateways":
        raise WireError(f"unexpected routing key {routing_key!r}")
    try:
        kind = Kind(".".join(parts[4:]))
    except ValueError as exc:
        raise WireError(f"unexpected routing key {routing_key!r}") from exc
    return Route(parts[1], parts[3], kind)


class WireReading(NamedTuple):
    """One reading of a batch: the fields the database indexes, and its JSON as sent."""

    id: str
    seq: int
    type: str
    priority: str
    ts: str | None  # None unless in the contract's form (the body keeps what was sent)
    body: str


@dataclass(frozen=True, slots=True)
class WireBatch:
    epoch: str
    sent_at: str | None
    readings: list[WireReading]

    @property
    def count(self) -> int:
        return len(self.readings)


# The batch envelope and one reading, as msgspec decodes them: unknown fields
# are ignored here and kept in the body. Each reading stays raw JSON first, so
# its body is the gateway's own bytes, never re-encoded (re-encoding with the
# stdlib cost 10 us a reading, more than PostgreSQL's insert of it).
class _Envelope(msgspec.Struct):
    v: Any
    site: Any
    gateway: Any
    epoch: str
    readings: list[msgspec.Raw]
    sent_at: Any = None


class _Reading(msgspec.Struct):
    id: Any
    seq: int
    type: str
    priority: str | None = None
    ts: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_READING = msgspec.json.Decoder(_Reading)


def parse_batch(payload: bytes, where: Route) -> WireBatch:
    """Read one batch envelope: its gateway, and each reading's ``id`` against its ``seq``.

    Raises:
        WireError: not JSON, not a v1 batch of this gateway, or a reading
            without a valid ``seq`` and ``type``, or whose ``id`` is not
            ``{gateway}:{epoch}:{seq}``.
    """
    try:
        doc = _ENVELOPE.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise WireError(f"not a v1 batch: {exc}") from exc
    if doc.v != 1 or type(doc.v) is not int:
        raise WireError("not a v1 JSON object")
    if doc.gateway != where.gateway or doc.site != where.site:
        raise WireError("batch gateway/site differ from its topic")
    prefix = f"{where.gateway}:{doc.epoch}:"
    decode, is_ts = _READING.decode, _TS_RE.fullmatch  # the loop runs per reading: no lookups
    readings = []
    for raw in doc.readings:
        try:
            item = decode(raw)
        except msgspec.DecodeError as exc:
            raise WireError(f"bad reading: {exc}") from exc
        seq, ts = item.seq, item.ts
        if seq < 1:
            raise WireError("reading without a valid seq")
        if item.id != f"{prefix}{seq}":
            raise WireError(f"reading id {item.id!r} does not match its seq")
        readings.append(
            WireReading(
                item.id,
                seq,
                item.type,
                item.priority or "routine",
                ts if type(ts) is str and is_ts(ts) else None,
                bytes(raw).decode(),
            )
        )
    return WireBatch(doc.epoch, contract_ts(doc.sent_at), readings)


def parse_stamped(payload: bytes) -> tuple[dict[str, Any], str]:
    """A status or access-state message and its ``at`` (newer ones win).

    Raises:
        WireError: not a v1 JSON object with an ``at`` string.
    """
    doc = _object(payload)
    at = contract_ts(doc.get("at"))
    if at is None:
        raise WireError("message without at")
    return doc, at


def parse_result(payload: bytes) -> dict[str, Any]:
    """A command result (``id`` may be null for a payload too malformed to have one)."""
    return _object(payload)


def _object(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"bad JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise WireError("not a v1 JSON object")
    return doc
