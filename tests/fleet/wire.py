"""Contract-exact batch envelopes for tests and benchmarks (CONTRACT.md "Readings")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from gateway.timefmt import rfc3339


def reading(
    gateway: str,
    epoch: str,
    seq: int,
    *,
    type_: str = "temperature.body",
    priority: str = "routine",
    data: dict[str, Any] | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    return {
        "id": f"{gateway}:{epoch}:{seq}",
        "seq": seq,
        "ts": rfc3339(ts if ts is not None else time.time()),
        "device": "temp-gate-1",
        "type": type_,
        "priority": priority,
        "data": data if data is not None else {"celsius": 36.6, "threshold": 37.3, "fever": False},
    }


def batch(site: str, gateway: str, epoch: str, readings: Iterable[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "site": site,
            "gateway": gateway,
            "epoch": epoch,
            "sent_at": rfc3339(time.time()),
            "readings": list(readings),
        },
        separators=(",", ":"),
    ).encode()


def dropped(gateway: str, epoch: str, seq: int, lo: int, hi: int) -> dict[str, Any]:
    return reading(
        gateway,
        epoch,
        seq,
        type_="gateway.dropped",
        priority="alarm",
        data={"from_seq": lo, "to_seq": hi, "count": hi - lo + 1, "reason": "size_cap"},
    )
