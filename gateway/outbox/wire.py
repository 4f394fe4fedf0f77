"""The contract's JSON, written in one place (CONTRACT.md: "Readings", "Status", "Commands").

- ``reading_body``: one reading of a batch (``id``, ``seq``, ``ts``, ``device``,
  ``type``, ``priority``, ``data``, and ``"clock": "unsynced"`` when so);
- ``BatchEnvelope``: the object around a batch on ``{root}/readings`` and
  ``{root}/alarms``;
- ``status_json``: the retained status (and the will);
- ``result_json``: a command's outcome on ``{root}/commands/results``.

The outbox and the uplink write readings and batches on the hot path (100k
readings/s), so those two are plain string building over parts that are
already JSON (``data`` is stored as JSON text, device names are encoded once
per device by the caller); the other two go through ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

CONTRACT_VERSION = 1


def reading_body(
    *,
    id_prefix: str,
    seq: int,
    ts: str,
    device_json: str,
    type_: str,
    priority: str,
    data_json: str,
    unsynced: bool,
) -> str:
    """One reading as JSON. ``id_prefix`` is ``{gateway}:{epoch}:``; ``*_json`` are JSON already."""
    clock = ',"clock":"unsynced"' if unsynced else ""
    return (
        f'{{"id":"{id_prefix}{seq}","seq":{seq},"ts":"{ts}","device":{device_json},'
        f'"type":"{type_}","priority":"{priority}","data":{data_json}{clock}}}'
    )


class BatchEnvelope:
    """Writes the batch envelope of one gateway (its ``site`` and ``gateway`` fixed)."""

    def __init__(self, site: str, gateway_id: str) -> None:
        self._prefix = (
            f'{{"v":{CONTRACT_VERSION},"site":{json.dumps(site)},'
            f'"gateway":{json.dumps(gateway_id)},"epoch":"'
        )

    def write(self, *, epoch: str, sent_at: str, bodies: Sequence[str]) -> str:
        """The envelope around ``bodies`` (each a ``reading_body``)."""
        return f'{self._prefix}{epoch}","sent_at":"{sent_at}","readings":[{",".join(bodies)}]}}'


def status_json(
    *,
    state: str,
    version: str,
    started_at: str,
    at: str,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The status message; ``extra`` adds ``backlog``, ``devices``, ``clock`` and the like."""
    status: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "state": state,
        "version": version,
        "started_at": started_at,
        "at": at,
    }
    if reason is not None:
        status["reason"] = reason
    if extra:
        status.update(extra)
    return json.dumps(status, separators=(",", ":"))


def result_json(
    *,
    command_id: str | None,
    status: str,
    reason: str | None,
    device: str | None,
    at: str,
    latency_ms: float | None,
) -> bytes:
    """A command result as UTF-8 JSON; ``latency_ms`` rounded to 0.1 ms."""
    body = {
        "v": CONTRACT_VERSION,
        "id": command_id,
        "status": status,
        "reason": reason,
        "device": device,
        "at": at,
        "latency_ms": None if latency_ms is None else round(latency_ms, 1),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
