"""CommandProcessor: outcomes, audit, results, ping, latency, recovery, cancellation.

Longer than 400 lines because it is one fake door and one rig driving every
outcome of the processor, including unverified messages and reply topics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.actions import DeviceAction, DoorOpen
from drivers.base import (
    ActionNotSupportedError,
    DeviceError,
    DeviceHealth,
    DeviceOffline,
    DeviceRefused,
    DeviceTimeout,
    Driver,
    Priority,
    ReadingType,
)
from gateway.cli.operator_tools import (
    build_command,
    encode_command,
    public_key_b64,
)
from gateway.commands.inbound import InboundCommand
from gateway.commands.model import (
    CommandsConfig,
    CommandStatus,
    RejectReason,
    VerifiedCommand,
    sign,
)
from gateway.commands.processor import CommandProcessor
from gateway.commands.store import CommandStore
from gateway.commands.unverified import RESULT_BURST, RESULTS_PER_S
from gateway.outbox.store import Lane
from tests.fakes import FakeClock, RecordingSink

GATEWAY = "north-gate-1"
PREFIX = "reply/"  # where response topics are honoured in these tests
T0 = 1_795_939_200.0
KEY = Ed25519PrivateKey.generate()
RECEIVED_MONO = 500.0
EXECUTE_MS = 14.2


@dataclass
class StoredResults:
    """The results as queued in the command store (where the uplink sends them from)."""

    store: CommandStore

    @property
    def results(self) -> list[tuple[dict[str, Any], str | None, bytes | None]]:
        out: list[tuple[dict[str, Any], str | None, bytes | None]] = []
        for message in self.store.results.pending():
            if message.topic is None:
                out.append((json.loads(message.body), None, None))
            else:  # the same result, to its response topic
                out[-1] = (out[-1][0], message.topic, message.correlation)
        return out


class FakeDoor:
    """A Driver in-test: records calls, takes EXECUTE_MS of fake time, may raise or block."""

    def __init__(self, device_id: str, clock: FakeClock) -> None:
        self.device_id = device_id
        self.health = DeviceHealth(device_id, RecordingSink(), clock)
        self.clock = clock
        self.calls: list[DeviceAction] = []
        self.raises: BaseException | None = None
        self.block = False
        self.started = asyncio.Event()

    async def run(self) -> None:
        await asyncio.Event().wait()

    def actions(self) -> frozenset[str]:
        return frozenset({"door.open", "door.set_mode"})

    async def execute(self, action: DeviceAction) -> None:
        self.calls.append(action)
        self.started.set()
        self.clock.advance(EXECUTE_MS / 1000)
        if self.block:
            await asyncio.Event().wait()
        if self.raises is not None:
            raise self.raises


@dataclass
class Rig:
    processor: CommandProcessor
    door: FakeDoor
    store: CommandStore
    readings: RecordingSink
    results: StoredResults
    clock: FakeClock


def make_config(**overrides: Any) -> CommandsConfig:
    raw: dict[str, Any] = {
        "public_keys": {"platform-2026": public_key_b64(KEY)},
        "permissions": {
            "door-east-1": {
                "actions": ["door.open", "door.set_mode"],
                "key_ids": ["platform-2026"],
            },
            GATEWAY: {"actions": ["gateway.ping"], "key_ids": ["platform-2026"]},
        },
    }
    raw.update(overrides)
    return CommandsConfig.model_validate(raw)


def make_rig(
    tmp_path: Path,
    clock: FakeClock | None = None,
    *,
    door: FakeDoor | None = None,
    **overrides: Any,
) -> Rig:
    # The message arrived 1 ms ago.
    clock = clock or FakeClock(wall=T0 + 1, mono=RECEIVED_MONO + 0.001)
    door = door or FakeDoor("door-east-1", clock)
    store = CommandStore.open(tmp_path, clock=clock)
    readings, results = RecordingSink(), StoredResults(store)
    drivers: dict[str, Driver] = {"door-east-1": door}
    processor = CommandProcessor(
        make_config(**overrides),
        gateway_id=GATEWAY,
        drivers=drivers,
        store=store,
        readings=readings,
        clock=clock,
        response_prefix=PREFIX,
    )
    return Rig(processor, door, store, readings, results, clock)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path)
    yield made
    made.store.close()


def payload(
    *,
    command_id: str = "cmd-1",
    action: str = "door.open",
    device: str = "door-east-1",
    params: Mapping[str, Any] | None = None,
) -> bytes:
    command = build_command(
        command_id=command_id,
        gateway=GATEWAY,
        action=action,
        device=device,
        params={} if params is None else params,
        key_id="platform-2026",
        issued_at=T0,
        ttl_s=30,
    )
    return encode_command(sign(command, KEY))


def inbound(data: bytes, **kwargs: Any) -> InboundCommand:
    return InboundCommand(
        payload=data,
        response_topic=kwargs.get("response_topic"),
        correlation_data=kwargs.get("correlation_data"),
        received_mono=RECEIVED_MONO,
    )


async def handle(rig: Rig, data: bytes, **kwargs: Any) -> dict[str, Any]:
    sent = len(rig.results.results)
    result = await rig.processor.process(inbound(data, **kwargs))
    body: dict[str, Any] = rig.results.results[-1][0]
    assert len(rig.results.results) > sent
    if result is not None:
        assert json.loads(result.to_json()) == body  # what was returned is what was sent
    return body


async def synced_by_run_syncs(rig: Rig) -> None:
    """Run the processor's sync task until queued results became sendable."""
    syncing = asyncio.create_task(rig.processor.run_syncs(), name="syncs")
    try:
        async with asyncio.timeout(5):
            await rig.store.results.new_data.wait()
    finally:
        syncing.cancel()


async def test_door_open_done(rig: Rig) -> None:
    body = await handle(rig, payload(), response_topic="reply/to", correlation_data=b"c1")
    assert body == {
        "v": 1,
        "id": "cmd-1",
        "status": "done",
        "reason": None,
        "device": "door-east-1",
        "at": "2026-11-29T08:00:01.014Z",
        "latency_ms": pytest.approx(1.0 + EXECUTE_MS),
    }
    assert rig.door.calls == [DoorOpen(hold_seconds=5)]  # typed, default filled in
    assert rig.results.results[-1][1:] == ("reply/to", b"c1")
    # Synced before process() returned: the uplink may send it now.
    sendable = await rig.store.results.fetch(Lane.RESULT, 0, 1, 1 << 20)
    assert sendable is not None and json.loads(sendable.bodies[0]) == body

    [reading] = rig.readings.readings
    assert reading.type is ReadingType.AUDIT_COMMAND
    assert reading.priority is Priority.ROUTINE
    assert reading.device == "door-east-1"
    assert reading.data == {
        "id": "cmd-1",
        "action": "door.open",
        "device": "door-east-1",
        "status": "done",
        "reason": None,
        "key_id": "platform-2026",
    }
    [row] = rig.store.audit_log()
    assert (row.id, row.status, row.reason, row.key_id) == (
        "cmd-1",
        CommandStatus.DONE,
        None,
        "platform-2026",
    )
    assert row.latency_ms == pytest.approx(1.0 + EXECUTE_MS)
    assert rig.store.unfinished() == []


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (DeviceOffline("door-east-1", "gone"), "failed", "device_offline"),
        (DeviceTimeout("door-east-1", "no reply"), "failed", "timeout"),
        (DeviceRefused("door-east-1", "exception 04"), "failed", "device_error"),
        (DeviceError("door-east-1", "fault"), "failed", "device_error"),
        (TimeoutError(), "failed", "timeout"),
        (RuntimeError("driver bug"), "failed", "device_error"),
        (ActionNotSupportedError("door-east-1", "no"), "rejected", "not_permitted"),
    ],
)
async def test_execute_failures_map_to_reasons(
    rig: Rig, error: BaseException, status: str, reason: str
) -> None:
    rig.door.raises = error
    body = await handle(rig, payload(params={"hold_seconds": 3}))
    assert (body["status"], body["reason"]) == (status, reason)
    assert body["latency_ms"] == pytest.approx(1.0 + EXECUTE_MS)
    assert rig.readings.readings[-1].data["reason"] == reason
    assert rig.store.audit_log()[-1].reason == RejectReason(reason)
    assert rig.store.unfinished() == []


async def test_execute_timeout_budget(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, execute_timeout_s=0.01)
    rig.door.block = True
    try:
        body = await handle(rig, payload())
    finally:
        rig.store.close()
    assert (body["status"], body["reason"]) == ("failed", "timeout")


async def test_ping_is_answered_by_the_gateway(rig: Rig) -> None:
    body = await handle(rig, payload(action="gateway.ping", device=GATEWAY))
    assert (body["status"], body["reason"], body["device"]) == ("done", None, GATEWAY)
    assert rig.door.calls == []
    assert rig.readings.readings[0].device == GATEWAY
    assert rig.store.is_seen("cmd-1")


async def test_unverified_message_is_counted_not_stored(rig: Rig) -> None:
    syncs: list[int] = []
    rig.store.sync = lambda: syncs.append(1)  # type: ignore[method-assign]
    body = await handle(rig, b"\x00\xff garbage", response_topic="reply/to")
    assert body["id"] is None
    assert (body["status"], body["reason"], body["device"]) == ("rejected", "bad_json", None)
    assert body["latency_ms"] == pytest.approx(1.0)
    # Results topic only (the response topic needs a verified signature), no
    # sync of its own, no audit row, no reading of its own.
    assert rig.results.results[0][1:] == (None, None)
    assert syncs == []
    # Not sendable before a sync: run_syncs makes it durable, once for a burst.
    assert await rig.store.results.fetch(Lane.RESULT, 0, 1, 1 << 20) is None
    await synced_by_run_syncs(rig)
    assert syncs == [1]
    assert await rig.store.results.fetch(Lane.RESULT, 0, 1, 1 << 20) is not None
    assert rig.store.audit_log() == []
    assert rig.readings.readings == []


async def test_a_burst_of_unverified_results_costs_one_sync(rig: Rig) -> None:
    syncs: list[int] = []
    rig.store.sync = lambda: syncs.append(1)  # type: ignore[method-assign]
    for _ in range(RESULT_BURST):
        await rig.processor.process(inbound(b"not json"))
    await synced_by_run_syncs(rig)
    assert syncs == [1]
    assert rig.store.results.durable == rig.store.results.committed()
    assert len(rig.results.results) == RESULT_BURST


async def test_unverified_messages_are_reported_in_aggregate(rig: Rig) -> None:
    for data in (b"not json", b"[1,2,3]", b"{}", b"{}"):
        assert await rig.processor.process(inbound(data)) is None
    forged = json.loads(payload())
    forged["params"] = {"hold_seconds": 30}  # the signature no longer covers it
    await rig.processor.process(inbound(json.dumps(forged).encode()))
    rig.clock.step_wall(60)
    rig.processor.report_unverified()
    [reading] = rig.readings.readings
    assert reading.type is ReadingType.AUDIT_COMMAND
    assert reading.device == GATEWAY
    assert reading.data["unverified"] == {"bad_json": 1, "bad_schema": 3, "bad_signature": 1}
    assert reading.data["count"] == 5
    assert (reading.data["status"], reading.data["reason"]) == ("rejected", "bad_schema")
    rig.processor.report_unverified()  # nothing new: no second reading
    assert len(rig.readings.readings) == 1


async def test_results_for_unverified_messages_are_rate_limited(rig: Rig) -> None:
    for _ in range(RESULT_BURST * 5):
        await rig.processor.process(inbound(b"not json"))
    assert len(rig.results.results) == RESULT_BURST
    rig.clock.advance(1.0)
    for _ in range(RESULT_BURST):
        await rig.processor.process(inbound(b"not json"))
    assert len(rig.results.results) == RESULT_BURST + int(RESULTS_PER_S)
    rig.processor.report_unverified()
    assert rig.readings.readings[0].data["results_suppressed"] == RESULT_BURST * 6 - (
        RESULT_BURST + int(RESULTS_PER_S)
    )
    # A real command is not held back by the budget the garbage spent.
    assert (await handle(rig, payload()))["status"] == "done"


@pytest.mark.parametrize(
    ("topic", "correlation", "honoured"),
    [
        ("reply/to", b"c1", True),
        ("reply/to", None, True),
        ("a/#", b"c1", False),  # a wildcard: paho would refuse to publish it
        ("reply/+/x", b"c1", False),
        ("elsewhere/topic", b"c1", False),  # outside the prefix
        ("reply/", b"c1", False),  # the prefix alone
        ("reply/" + "x" * 251, b"c1", False),  # over 256 bytes
        ("reply/to", b"c" * 257, False),  # correlation data over 256 bytes
        ("reply/to", b"c" * 256, True),
    ],
)
async def test_response_topic_honoured_only_under_the_prefix(
    rig: Rig, topic: str, correlation: bytes | None, honoured: bool
) -> None:
    await handle(rig, payload(), response_topic=topic, correlation_data=correlation)
    expected = (topic, correlation) if honoured else (None, None)
    assert rig.results.results[-1][1:] == expected


async def test_replay_is_rejected_and_runs_once(rig: Rig) -> None:
    data = payload()
    assert (await handle(rig, data))["status"] == "done"
    body = await handle(rig, data)
    assert (body["status"], body["reason"]) == ("rejected", "replayed")
    assert len(rig.door.calls) == 1
    assert [r.reason for r in rig.store.audit_log()] == [None, RejectReason.REPLAYED]


async def test_refused_authentic_command_spends_its_id(rig: Rig) -> None:
    data = payload(device="door-nowhere")
    assert (await handle(rig, data))["reason"] == "unknown_device"
    assert (await handle(rig, data))["reason"] == "replayed"


async def test_expired_command_does_not_spend_its_id(rig: Rig) -> None:
    rig.clock.step_wall(30)
    assert (await handle(rig, payload()))["reason"] == "expired"
    assert not rig.store.is_seen("cmd-1")


async def test_concurrent_duplicate_runs_once(rig: Rig) -> None:
    rig.door.block = True
    data = payload()
    first = asyncio.create_task(handle(rig, data), name="first")
    await rig.door.started.wait()
    second = await handle(rig, data)
    assert second["reason"] == "replayed"
    rig.door.block = False
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(rig.door.calls) == 1


async def test_cancelled_mid_command_is_reported_then_reraised(rig: Rig) -> None:
    rig.door.block = True
    task = asyncio.create_task(
        rig.processor.process(inbound(payload(), response_topic="reply/r", correlation_data=b"c")),
        name="cancelled",
    )
    await rig.door.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(body, topic, corr)] = rig.results.results
    assert (body["status"], body["reason"], topic, corr) == ("failed", "timeout", "reply/r", b"c")
    assert rig.store.unfinished() == []


async def test_unfinished_commands_are_reported_after_restart(tmp_path: Path) -> None:
    clock = FakeClock(wall=T0 + 1, mono=RECEIVED_MONO + 0.001)
    # Accepted, then the gateway died before finishing: the store alone shows it.
    store = CommandStore.open(tmp_path, clock=clock)
    store.accept(
        VerifiedCommand(
            "cmd-7", "door.open", "door-east-1", DoorOpen(), "platform-2026", T0, T0 + 30
        ),
        received_at=T0,
        response_topic="reply/to",
        correlation_data=b"c7",
    )
    store.close()

    rig = make_rig(tmp_path, clock)
    try:
        [result] = rig.processor.report_unfinished()
        assert (result.id, result.status, result.reason, result.latency_ms) == (
            "cmd-7",
            CommandStatus.FAILED,
            RejectReason.TIMEOUT,
            None,
        )
        [(body, topic, corr)] = rig.results.results
        assert (body["id"], body["latency_ms"], topic, corr) == ("cmd-7", None, "reply/to", b"c7")
        assert rig.readings.readings[0].data["status"] == "failed"
        assert rig.door.calls == []  # never run again
        assert rig.processor.report_unfinished() == []
        assert (await handle(rig, payload(command_id="cmd-7")))["reason"] == "replayed"
    finally:
        rig.store.close()


async def test_store_failure_fails_without_running(rig: Rig) -> None:
    rig.store.close()
    result = await rig.processor.process(inbound(payload()))
    assert result is not None
    assert (result.status, result.reason) == (CommandStatus.FAILED, RejectReason.DEVICE_ERROR)
    assert rig.door.calls == []
    assert rig.readings.readings[0].data["reason"] == "device_error"
    # The store holds results too: with it failing, the result goes from memory
    # (tests/unit/test_commands_unstored.py).
    assert rig.store.results.held == 1


async def test_signature_never_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    data = payload(device="door-nowhere")
    sig = json.loads(data)["sig"]
    caplog.set_level("DEBUG")
    await handle(rig, data)
    await handle(rig, payload(command_id="cmd-2"))
    assert "cmd-1" in caplog.text
    assert "cmd-2" in caplog.text
    assert sig not in caplog.text
    assert sig[:16] not in caplog.text


async def test_outcomes_are_counted_by_status_and_reason(rig: Rig) -> None:
    await handle(rig, payload())
    await handle(rig, payload())  # the same id again
    await handle(rig, b"not json")
    assert rig.processor.outcomes == {
        ("done", "none"): 1,
        ("rejected", "replayed"): 1,
        ("rejected", "bad_json"): 1,
    }
