"""The uplink against a real mosquitto: delivery, outages, priority, failover, TLS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.base import Clock, Priority, ReadingType, SystemClock, make_reading
from gateway.commands.inbound import InboundCommand
from gateway.commands.results import ResultMessage, messages
from gateway.commands.store import CommandStore
from gateway.config import MqttConfig
from gateway.outbox.store import Lane, Outbox
from gateway.runtime.clock import ClockSync, TrustedClockSync
from gateway.timefmt import parse_rfc3339
from gateway.uplink.drain import LaneSource
from gateway.uplink.session import Uplink
from tests.broker import Mosquitto, free_port, make_tls_files
from tests.fakes import FakeClock, FakeClockSync, wait_until
from tests.subscriber import Subscriber, subscribed

pytestmark = pytest.mark.integration

ROOT = "estates/changqing/gateways/north-gate-1"


@dataclass
class RecordingCommands:
    got: list[tuple[bytes, str | None, bytes | None]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def submit(self, inbound: InboundCommand) -> None:
        self.got.append((inbound.payload, inbound.response_topic, inbound.correlation_data))
        self.event.set()


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path,
    brokers: list[str],
    *,
    ca: Path | None = None,
    clock: Clock | None = None,
    clock_sync: ClockSync | None = None,
    results: LaneSource | None = None,
    **mqtt: object,
) -> AsyncIterator[tuple[Outbox, Uplink, RecordingCommands]]:
    config = MqttConfig.model_validate(
        {
            "brokers": brokers,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "batch_max_readings": 200,
            **mqtt,
        }
    )
    outbox = Outbox(
        tmp_path / "data",
        site="changqing",
        gateway_id="north-gate-1",
        clock=clock or SystemClock(),
        clock_sync=clock_sync or TrustedClockSync(),
        boot_id="b",
        commit_interval_s=0.05,
        sync_interval_s=0.2,
    )
    await outbox.open()
    commands = RecordingCommands()
    uplink = Uplink(
        config,
        site="changqing",
        gateway_id="north-gate-1",
        topic_root=ROOT,
        client_id="changqing-north-gate-1",
        outbox=outbox,
        results=results,
        commands=commands,
        device_states=lambda: {},
        tls_files=(ca, None, None),
    )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(outbox.run()), group.create_task(uplink.run())]
        try:
            yield outbox, uplink, commands
        finally:
            await uplink.shutdown()
            async with asyncio.timeout(5):
                await tasks[1]
            tasks[0].cancel()
    await outbox.close()


def queue_durably(store: CommandStore, result: list[ResultMessage]) -> None:
    """Queue a result in the command store and sync it, as the command processor does."""
    store.queue_result(result)
    mark = store.results.committed()
    store.sync()
    store.results.durable_through(mark)


def put_routine(outbox: Outbox, n: int) -> None:
    put_readings(
        outbox,
        n,
        "temp-gate-1",
        ReadingType.TEMPERATURE_BODY,
        lambda i: {"celsius": 36.0 + i % 10 / 10, "threshold": 37.3, "fever": False},
    )


def put_alarms(outbox: Outbox, n: int) -> None:
    put_readings(
        outbox,
        n,
        "band-rx",
        ReadingType.WEARABLE_SOS,
        lambda _: {"wearer": "w-1", "battery": 3.0},
        Priority.ALARM,
    )


def put_readings(
    outbox: Outbox,
    n: int,
    device: str,
    type_: ReadingType,
    data: Callable[[int], dict[str, Any]],
    priority: Priority = Priority.ROUTINE,
) -> None:
    clock = SystemClock()
    for i in range(n):
        outbox.put(make_reading(clock, device, type_, data(i), priority))


@contextlib.asynccontextmanager
async def platform_client(
    broker: Mosquitto, uplink: Uplink, *, v5: bool = True
) -> AsyncIterator[aiomqtt.Client]:
    """The platform's MQTT client, once the gateway is subscribed to its commands."""
    async with asyncio.timeout(10):
        await uplink.subscribed.wait()
    protocol = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", broker.port, protocol=protocol) as platform:
        yield platform


async def wait_connected(uplink: Uplink, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not uplink.stats.connected:
            await asyncio.sleep(0.02)


async def test_readings_arrive_batched_gapless_and_leave_the_outbox(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with (
        subscribed(broker.port, ROOT) as sub,
        gateway(tmp_path, [broker.url]) as (outbox, _uplink, _),
    ):
        put_routine(outbox, 1000)
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 1000)
        async with asyncio.timeout(5):
            while outbox.stats.backlog[Lane.ROUTINE]:
                await asyncio.sleep(0.05)
    batches = sub.on("readings")
    assert 5 <= len(batches) < 1000  # batched, bounded by batch_max_readings=200
    envelope = batches[0].json()
    assert envelope["v"] == 1 and envelope["site"] == "changqing"
    assert envelope["gateway"] == "north-gate-1" and envelope["epoch"] == outbox.stats.epoch
    assert envelope["sent_at"].endswith("Z")
    assert sub.unique_seqs() == list(range(1, 1001))
    status = sub.on("status")
    assert status[0].json()["state"] == "online"
    assert status[-1].json() | {"reason": "shutdown"} == status[-1].json()
    assert status[-1].json()["state"] == "offline"


async def test_outage_loses_nothing_and_alarms_drain_first(
    tmp_path: Path, broker: Mosquitto
) -> None:
    sub = Subscriber(broker.port, ROOT)
    await sub.start()
    async with gateway(tmp_path, [broker.url]) as (outbox, uplink, _):
        await wait_connected(uplink)
        put_routine(outbox, 100)
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 100)
        broker.stop()
        await sub.stop()
        put_routine(outbox, 3000)
        put_alarms(outbox, 30)
        await outbox.commit()
        await outbox.commit()  # the commit that sees the sync corrects the earlier rows
        broker.start()
        before = sub.messages
        sub = Subscriber(broker.port, ROOT)  # same client id: the persistent session resumes
        sub.messages = before
        await sub.start()
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 3130, timeout=30)
    await sub.stop()
    assert sub.unique_seqs() == list(range(1, 3131))
    after = [m for m in sub.messages if m.topic.endswith(("/readings", "/alarms"))]
    after = [m for m in after if max(r["seq"] for r in m.json()["readings"]) > 100]
    first_routine = next(i for i, m in enumerate(after) if m.topic.endswith("/readings"))
    alarm_indexes = [i for i, m in enumerate(after) if m.topic.endswith("/alarms")]
    assert alarm_indexes and max(alarm_indexes) < first_routine


async def test_fails_over_to_the_second_broker(tmp_path: Path, broker: Mosquitto) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    async with (
        subscribed(broker.port, ROOT) as sub,
        gateway(tmp_path, [dead, broker.url]) as (outbox, uplink, _),
    ):
        await wait_connected(uplink)
        assert uplink.stats.broker == broker.url
        put_routine(outbox, 10)
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 10)


async def test_commands_reach_the_handler_with_response_topic(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with gateway(tmp_path, [broker.url]) as (_, uplink, commands):
        async with platform_client(broker, uplink) as platform:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "platform/replies/1"
            props.CorrelationData = b"corr-1"
            await platform.publish(f"{ROOT}/commands", b'{"v":1}', qos=1, properties=props)
        async with asyncio.timeout(10):
            await commands.event.wait()
    assert commands.got == [(b'{"v":1}', "platform/replies/1", b"corr-1")]


async def test_results_go_to_results_and_response_topics(tmp_path: Path, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port, "#")
    sub.root = ROOT
    await sub.start()
    store = CommandStore.open(tmp_path / "commands", clock=SystemClock())
    async with gateway(tmp_path, [broker.url], results=store.results) as (_, uplink, _):
        await wait_connected(uplink)
        body = '{"v":1,"id":"c1","status":"done"}'
        queue_durably(store, messages(body, f"{ROOT}/replies/x", b"k"))
        await sub.wait_for(lambda: bool(sub.on("commands/results")) and bool(sub.on("replies/x")))
        # Deleted after the PUBACKs: nothing waits in the store any more.
        await wait_until(lambda: store.results.backlog == 0, 10, every=0.02)
    await sub.stop()
    store.close()
    assert sub.on("commands/results")[0].json()["id"] == "c1"


async def test_tls_connects_with_the_test_ca(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", hostname="localhost")
    tls_broker = Mosquitto(tmp_path / "mosq", tls=files)
    tls_broker.start()
    try:
        async with gateway(tmp_path, [f"mqtts://localhost:{tls_broker.port}"], ca=files.ca) as (
            outbox,
            uplink,
            _,
        ):
            await wait_connected(uplink)
            put_routine(outbox, 5)
            async with asyncio.timeout(10):
                while outbox.stats.backlog[Lane.ROUTINE]:
                    await asyncio.sleep(0.05)
    finally:
        tls_broker.stop()


async def test_tls_refuses_a_wrong_certificate_and_never_falls_back(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", hostname="wrong.example", ip=None)
    tls_broker = Mosquitto(tmp_path / "mosq", tls=files)
    tls_broker.start()
    plain = Mosquitto(tmp_path / "plain")
    plain.start()
    try:
        # A name mismatch, and an mqtts:// URL aimed at a plain listener: neither connects.
        urls = [f"mqtts://localhost:{tls_broker.port}", f"mqtts://127.0.0.1:{plain.port}"]
        async with gateway(tmp_path, urls, ca=files.ca) as (outbox, uplink, _):
            put_routine(outbox, 3)
            async with asyncio.timeout(10):
                while uplink.stats.last_error is None or uplink.stats.reconnects < 0:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.5)  # several attempts on both brokers
            assert uplink.stats.connects == 0
            assert outbox.stats.backlog[Lane.ROUTINE] == 3
    finally:
        tls_broker.stop()
        plain.stop()


async def test_fails_back_to_the_first_broker_when_it_returns(
    tmp_path: Path, broker: Mosquitto
) -> None:
    first = Mosquitto(tmp_path / "first")  # configured, but down at the start
    async with gateway(tmp_path, [first.url, broker.url], failback_s=1) as (outbox, uplink, _):
        await wait_connected(uplink)
        assert uplink.stats.broker == broker.url
        first.start()
        try:
            async with asyncio.timeout(15):
                while uplink.stats.broker != first.url or not uplink.stats.connected:
                    await asyncio.sleep(0.05)
            sub = Subscriber(first.port, ROOT)
            await sub.start()
            put_routine(outbox, 5)
            await sub.wait_for(lambda: len(sub.unique_seqs()) == 5)
            await sub.stop()
        finally:
            first.stop()


async def test_readings_from_before_the_clock_sync_arrive_corrected(
    tmp_path: Path, broker: Mosquitto
) -> None:
    clock = FakeClock(wall=946_684_800.0)  # a Pi booted offline, believing it is 2000
    sync = FakeClockSync(synced=False)
    async with (
        subscribed(broker.port, ROOT) as sub,
        gateway(tmp_path, [broker.url], clock=clock, clock_sync=sync) as (outbox, uplink, _),
    ):
        await wait_connected(uplink)
        # Sent while unsynced: it cannot be vouched for, and says so.
        outbox.put(
            make_reading(
                clock, "band-rx", ReadingType.WEARABLE_FALL, {"wearer": "w-1"}, Priority.ALARM
            )
        )
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 1)
        broker.stop()  # the network goes; readings wait in the outbox
        clock.advance(2.0)
        taken_mono = clock.monotonic()
        outbox.put(
            make_reading(
                clock,
                "temp-gate-1",
                ReadingType.TEMPERATURE_BODY,
                {"celsius": 36.6, "threshold": 37.3, "fever": False},
            )
        )
        await outbox.commit()
        clock.advance(10.0)
        clock.step_wall(1_795_000_000.0 - clock.wall())  # NTP steps the clock
        sync.synced = True
        outbox.put(
            make_reading(
                clock,
                "temp-gate-1",
                ReadingType.TEMPERATURE_BODY,
                {"celsius": 36.7, "threshold": 37.3, "fever": False},
            )
        )
        await outbox.commit()  # the commit that sees the sync corrects the earlier rows
        broker.start()
        # The subscriber reconnects by itself (a second one with the same client
        # id would take its session over, and the two would keep kicking each other).
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 3, timeout=30)
    by_seq: dict[int, dict[str, Any]] = {}
    for r in sub.readings():  # first arrival: seq 1 may come again, corrected, after the outage
        by_seq.setdefault(r["seq"], r)
    assert by_seq[1]["clock"] == "unsynced"
    assert "clock" not in by_seq[2] and "clock" not in by_seq[3]
    true_ts = clock.wall() - (clock.monotonic() - taken_mono)
    assert parse_rfc3339(by_seq[2]["ts"]) == pytest.approx(true_ts, abs=0.002)
    assert parse_rfc3339(by_seq[3]["ts"]) == pytest.approx(clock.wall(), abs=0.002)


async def test_mqtt_3_1_1_by_option(tmp_path: Path, broker: Mosquitto) -> None:
    async with (
        subscribed(broker.port, ROOT) as sub,
        gateway(tmp_path, [broker.url], protocol="3.1.1") as (outbox, uplink, commands),
    ):
        put_routine(outbox, 20)
        await sub.wait_for(lambda: len(sub.unique_seqs()) == 20)
        async with platform_client(broker, uplink, v5=False) as platform:
            await platform.publish(f"{ROOT}/commands", b'{"v":1}', qos=1)
        async with asyncio.timeout(10):
            await commands.event.wait()
    assert commands.got == [(b'{"v":1}', None, None)]
