"""The contract's JSON from its one writer: each message parses to what CONTRACT.md shows."""

from __future__ import annotations

import json

from gateway.outbox.wire import BatchEnvelope, reading_body, result_json, status_json


def example_body(*, ts: str = "2026-11-29T08:00:00.123Z", unsynced: bool = False) -> str:
    """The body of CONTRACT.md's example reading (seq 1042 of north-gate-1)."""
    return reading_body(
        id_prefix="north-gate-1:k3f9x2:",
        seq=1042,
        ts=ts,
        device_json='"temp-gate-1"',
        type_="temperature.body",
        priority="alarm",
        data_json='{"celsius":38.1,"threshold":37.3,"fever":true}',
        unsynced=unsynced,
    )


def test_batch_envelope_and_reading_body_match_the_contract_example() -> None:
    body = example_body()
    envelope = BatchEnvelope("changqing", "north-gate-1").write(
        epoch="k3f9x2", sent_at="2026-11-29T08:00:00.500Z", bodies=[body]
    )
    assert json.loads(envelope) == {
        "v": 1,
        "site": "changqing",
        "gateway": "north-gate-1",
        "epoch": "k3f9x2",
        "sent_at": "2026-11-29T08:00:00.500Z",
        "readings": [
            {
                "id": "north-gate-1:k3f9x2:1042",
                "seq": 1042,
                "ts": "2026-11-29T08:00:00.123Z",
                "device": "temp-gate-1",
                "type": "temperature.body",
                "priority": "alarm",
                "data": {"celsius": 38.1, "threshold": 37.3, "fever": True},
            }
        ],
    }


def test_unsynced_reading_says_so() -> None:
    body = example_body(ts="2024-06-01T00:00:00.000Z", unsynced=True)
    assert json.loads(body)["clock"] == "unsynced"
    assert "clock" not in json.loads(example_body())


def test_status_and_result() -> None:
    status = json.loads(
        status_json(
            state="offline",
            version="1.2.0",
            started_at="s",
            at="a",
            reason="shutdown",
            extra={"clock": {"synced": False}},
        )
    )
    assert status == {
        "v": 1,
        "state": "offline",
        "version": "1.2.0",
        "started_at": "s",
        "at": "a",
        "reason": "shutdown",
        "clock": {"synced": False},
    }
    result = json.loads(
        result_json(
            command_id=None,
            status="rejected",
            reason="bad_json",
            device=None,
            at="t",
            latency_ms=1.04,
        )
    )
    assert result == {
        "v": 1,
        "id": None,
        "status": "rejected",
        "reason": "bad_json",
        "device": None,
        "at": "t",
        "latency_ms": 1.0,
    }
