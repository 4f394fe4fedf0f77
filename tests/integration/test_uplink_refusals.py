"""Messages the broker refuses never stop the drain (issue 9, item 1), on a real mosquitto.

A refused publish used to tear the session down and leave the row first in its
lane, retried first forever (148 reconnects in 9 s measured with an ACL that
forbids one response topic). Now a refused or unpublishable message is set
aside in the dead-letter table, and a batch larger than the broker accepts is
split.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import ReadingType, SystemClock, make_reading
from gateway.commands.results import messages
from gateway.commands.store import CommandStore
from gateway.outbox.report import read_report
from gateway.outbox.store import Lane, Outbox
from gateway.uplink.drain import SET_ASIDE_AFTER_LOSSES
from tests.broker import Mosquitto
from tests.integration.test_uplink import (
    ROOT,
    gateway,
    platform_client,
    put_routine,
    queue_durably,
)
from tests.subscriber import subscribed

pytestmark = pytest.mark.integration

FORBIDDEN = f"{ROOT}/commands/results/forbidden"


@contextlib.contextmanager
def mosquitto(tmp_path: Path, *extra: str) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    with broker.conf.open("a") as conf:
        conf.write("".join(line + "\n" for line in extra))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def dead_letters(outbox: Outbox) -> list[tuple[str, str | None, int, str]]:
    db = sqlite3.connect(outbox.path)
    try:
        query = "SELECT lane, topic, rows, reason FROM dead_letter ORDER BY id"
        return db.execute(query).fetchall()
    finally:
        db.close()


async def until(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def acl_file(tmp_path: Path) -> str:
    path = tmp_path / "acl"
    path.write_text(f"topic deny {FORBIDDEN}/#\ntopic readwrite #\n")
    return f"acl_file {path}"


async def test_acl_refusal_sets_the_row_aside_and_the_session_stays_up(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path / "data", clock=SystemClock())
    with mosquitto(tmp_path, acl_file(tmp_path)) as broker:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url], results=store.results) as (outbox, uplink, _),
        ):
            await until(lambda: uplink.stats.connected)
            body = '{"v":1,"id":"c1","status":"done"}'
            queue_durably(store, messages(body, f"{FORBIDDEN}/x", b"k"))
            put_routine(outbox, 300)
            await sub.wait_for(lambda: len(sub.unique_seqs()) == 300)
            await sub.wait_for(lambda: bool(sub.on("commands/results")))
            await until(lambda: outbox.stats.dead_letter == 1)
            await until(lambda: store.results.backlog == 0)
            assert uplink.stats.connects == 1  # no reconnect loop
            assert uplink.stats.set_aside == 1
        [(lane, topic, rows, reason)] = dead_letters(outbox)
        assert (lane, topic, rows) == ("result", f"{FORBIDDEN}/x", 1)
        assert "0x87" in reason  # MQTT 5 "not authorized"
        report = read_report(tmp_path / "data")  # what `status` prints
        assert report.dead_letter == 1
        assert "dead letters   1 " in report.to_text()
        assert report.backlog["result"] == 0
    store.close()


def big_reading(outbox: Outbox, size: int) -> None:
    outbox.put(
        make_reading(
            SystemClock(),
            "temp-gate-1",
            ReadingType.TEMPERATURE_BODY,
            {"celsius": 36.6, "threshold": 37.3, "fever": False, "pad": "x" * size},
        )
    )


async def test_batch_too_large_for_the_broker_is_split_and_one_huge_reading_set_aside(
    tmp_path: Path,
) -> None:
    # mosquitto's max_packet_size reaches us as the CONNACK Maximum Packet Size.
    # (Its message_size_limit answers 0x95 in a PUBACK, a code MQTT 5 does not
    # allow there: paho drops the connection, see README "Broker settings".)
    with mosquitto(tmp_path, "max_packet_size 4096") as broker:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url]) as (outbox, uplink, _),
        ):
            await until(lambda: uplink.stats.connected)
            put_routine(outbox, 100)
            big_reading(outbox, 6000)
            put_routine(outbox, 100)
            await sub.wait_for(lambda: len(sub.unique_seqs()) == 200)
            await until(lambda: outbox.stats.dead_letter == 1)
            await until(lambda: outbox.stats.backlog[Lane.ROUTINE] == 0)
            assert uplink.stats.connects == 1
            # Batches are built to fit the announced limit; the one reading that
            # cannot fit alone is set aside without ever being sent.
            assert all(len(m.payload) <= 4096 for m in sub.batches())
            assert all("pad" not in r["data"] for r in sub.readings())
            seqs = sub.unique_seqs()
        [(lane, _topic, rows, _reason)] = dead_letters(outbox)
        assert (lane, rows) == ("routine", 1)
        assert set(range(1, 202)) - set(seqs) == {101}  # only the huge one is missing


@pytest.mark.parametrize(
    ("limit", "protocol"),
    [
        # mosquitto answers 0x95 in a PUBACK, which paho takes as a protocol error.
        pytest.param("message_size_limit 40000", "5", id="message-size-limit-mqtt5"),
        # MQTT 3.1.1 cannot announce a limit: the broker just disconnects us.
        pytest.param("max_packet_size 40960", "3.1.1", id="max-packet-size-mqtt311"),
    ],
)
async def test_a_batch_the_broker_answers_by_disconnecting_is_split_then_set_aside(
    tmp_path: Path, limit: str, protocol: str
) -> None:
    with mosquitto(tmp_path, limit) as broker:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url], protocol=protocol) as (outbox, uplink, _),
        ):
            await until(lambda: uplink.stats.connected)
            put_routine(outbox, 100)  # batches of 200 readings fit the limit...
            big_reading(outbox, 60_000)  # ...this one does not, even alone
            put_routine(outbox, 100)
            await sub.wait_for(lambda: len(sub.unique_seqs()) == 200, timeout=60)
            await until(lambda: outbox.stats.dead_letter == 1, timeout=60)
            assert uplink.stats.splits > 0
            # Bounded: a loss per halving (200 -> 1) and a few for the last
            # one, not one per attempt forever.
            assert uplink.stats.connects < 20
            seqs = sub.unique_seqs()
        [(lane, _topic, rows, reason)] = dead_letters(outbox)
        assert (lane, rows) == ("routine", 1)
        assert "connection dropped" in reason
        assert set(range(1, 202)) - set(seqs) == {101}


async def test_a_result_that_cannot_be_published_at_all_is_set_aside(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path / "data", clock=SystemClock())
    with mosquitto(tmp_path) as broker:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url], results=store.results) as (outbox, uplink, _),
        ):
            await until(lambda: uplink.stats.connected)
            # A row written by an older gateway that trusted any response topic.
            queue_durably(store, messages('{"v":1,"id":"c2"}', "a/#", None))
            put_routine(outbox, 10)
            await sub.wait_for(lambda: len(sub.unique_seqs()) == 10)
            await until(lambda: outbox.stats.dead_letter == 1)
            assert uplink.stats.connects == 1
        [(lane, topic, _rows, reason)] = dead_letters(outbox)
        assert (lane, topic) == ("result", "a/#")
        assert "cannot publish" in reason
        assert store.results.pending() == []  # the results-topic copy went, the other aside
    store.close()


async def test_oversize_inbound_command_is_never_delivered(tmp_path: Path) -> None:
    """MQTT 5 Maximum Packet Size in CONNECT: the broker drops it, nothing is read here."""

    with mosquitto(tmp_path) as broker:
        async with gateway(tmp_path, [broker.url]) as (_outbox, uplink, commands):
            async with platform_client(broker, uplink) as platform:
                await platform.publish(f"{ROOT}/commands", b"x" * 100_000, qos=1)
                await platform.publish(f"{ROOT}/commands", b'{"v":1}', qos=1)
            async with asyncio.timeout(10):
                await commands.event.wait()
            assert commands.got == [(b'{"v":1}', None, None)]
            assert uplink.stats.connects == 1


async def test_mqtt_3_1_1_oversize_inbound_is_dropped_before_it_is_queued(tmp_path: Path) -> None:

    with mosquitto(tmp_path) as broker:
        async with gateway(tmp_path, [broker.url], protocol="3.1.1") as (_o, uplink, commands):
            async with platform_client(broker, uplink, v5=False) as platform:
                await platform.publish(f"{ROOT}/commands", b"x" * 100_000, qos=1)
                await platform.publish(f"{ROOT}/commands", b'{"v":1}', qos=1)
            async with asyncio.timeout(10):
                await commands.event.wait()
            assert commands.got == [(b'{"v":1}', None, None)]
            assert uplink.stats.inbound_oversize == 1


async def test_a_message_whose_handling_raises_does_not_end_the_session(tmp_path: Path) -> None:
    import aiomqtt

    with mosquitto(tmp_path) as broker:
        async with gateway(tmp_path, [broker.url]) as (_outbox, uplink, commands):
            async with asyncio.timeout(10):
                await uplink.subscribed.wait()
            original = commands.submit
            calls = 0

            def flaky(inbound: object) -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bug in the command path")
                original(inbound)  # type: ignore[arg-type]

            commands.submit = flaky  # type: ignore[method-assign]
            async with aiomqtt.Client("127.0.0.1", broker.port) as platform:
                await platform.publish(f"{ROOT}/commands", b"first", qos=1)
                await platform.publish(f"{ROOT}/commands", b"second", qos=1)
            async with asyncio.timeout(10):
                await commands.event.wait()
            assert commands.got == [(b"second", None, None)]
            assert uplink.stats.inbound_failures == 1
            assert uplink.stats.connects == 1


async def test_a_held_result_not_pubacked_goes_again_on_the_next_connection(
    tmp_path: Path,
) -> None:
    """A result held in memory (the command store could not write it) is sent
    again by each new connection until PUBACKed, like a row of the table: here
    the broker drops the connection for it every time, so it ends set aside."""
    store = CommandStore.open(tmp_path / "data", clock=SystemClock())
    with mosquitto(tmp_path, "max_packet_size 40960") as broker:
        async with (
            subscribed(broker.port, ROOT) as sub,
            gateway(tmp_path, [broker.url], results=store.results, protocol="3.1.1") as (
                outbox,
                uplink,
                _,
            ),
        ):
            await until(lambda: uplink.stats.connected)
            huge = '{"v":1,"id":"huge","pad":"' + "x" * 60_000 + '"}'
            store.results.hold(messages(huge, None, None))
            store.results.hold(messages('{"v":1,"id":"c3"}', None, None))
            await until(lambda: store.results.held == 0, timeout=60)
            await sub.wait_for(lambda: bool(sub.on("commands/results")))
            assert uplink.stats.connects > SET_ASIDE_AFTER_LOSSES
        [(lane, _topic, rows, reason)] = dead_letters(outbox)
        assert (lane, rows) == ("result", 1)
        assert "connection dropped" in reason
        assert {m.json()["id"] for m in sub.on("commands/results")} == {"c3"}
    store.close()
