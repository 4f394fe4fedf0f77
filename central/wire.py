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
from typing import Any

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


@dataclass(frozen=True, slots=True)
class WireBatch:
    epoch: str
    count: int  # readings in it


def parse_batch(payload: bytes, where: Route) -> WireBatch:
    """Check one batch envelope: its gateway, and each reading's ``id`` against its ``seq``.

    The readings themselves are split out by PostgreSQL (central/store.py),
    which is faster than re-encoding each one here.

    Raises:
        WireError: not JSON, not a v1 batch of this gateway, or a reading whose
            ``id`` is not ``{gateway}:{epoch}:{seq}``.
    """
    doc = _object(payload)
    if doc.get("gateway") != where.gateway or doc.get("site") != where.site:
        raise WireError("batch gateway/site differ from its topic")
    epoch = doc.get("epoch")
    readings = doc.get("readings")
    if not isinstance(epoch, str) or not isinstance(readings, list):
        raise WireError("batch without epoch or readings")
    prefix = f"{where.gateway}:{epoch}:"
    for item in readings:
        if not isinstance(item, dict):
            raise WireError("reading is not an object")
        seq = item.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise WireError("reading without a valid seq")
        if item.get("id") != f"{prefix}{seq}":
            raise WireError(f"reading id {item.get('id')!r} does not match its seq")
        if not isinstance(item.get("type"), str):
            raise WireError("reading without a type")
    return WireBatch(epoch, len(readings))


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
