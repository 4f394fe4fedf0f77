"""The real daemon's metrics endpoint: it answers, its counters move, a taken port is survivable."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.broker import SharedBroker, free_port
from tests.daemon import Daemon, write_config

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(("estate_gateway_" + name, frozenset(labels.items())), 0.0)


async def scrape_until(url: str, fact: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``fact`` holds (each scrape is a real HTTP request)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, url)
        if fact(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never showed the fact; last scrape: {samples}")
        await asyncio.sleep(0.1)


def temperatures(samples: Samples) -> float:
    return value(samples, "readings_total", device="temp-gate-1", type="temperature.body")


async def test_endpoint_answers_and_counters_move(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    daemon = Daemon(
        shared_broker.write_config(
            tmp_path / "gw" / "config.yaml",
            metrics={"port": port},
        )
    )
    daemon.start()
    try:
        await daemon.wait_for_log(f"metrics endpoint listening: url={url}")
        first = await scrape_until(
            url,
            lambda s: (
                temperatures(s) > 0
                and value(s, "mqtt_connected") == 1
                and value(s, "mqtt_batches_sent_total") > 0
            ),
        )
        second = await scrape_until(
            url,
            lambda s: (
                temperatures(s) > temperatures(first)
                and value(s, "mqtt_batches_sent_total") > value(first, "mqtt_batches_sent_total")
            ),
        )
        with pytest.raises(urllib.error.HTTPError) as not_found:
            await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{port}/nope", None, 5
            )
        assert not_found.value.code == 404
    finally:
        daemon.stop()
    assert value(second, "mqtt_puback_latency_seconds_count") > 0
    assert value(second, "mqtt_puback_latency_seconds_bucket", le="+Inf") == value(
        second, "mqtt_puback_latency_seconds_count"
    )
    assert value(second, "mqtt_broker_info", broker=shared_broker.url) == 1
    for device in ("door-east-1", "ebike-reader-1", "band-receiver-1", "temp-gate-1"):
        assert ("estate_gateway_device_online", frozenset({("device", device)})) in second
    assert value(second, "device_online", device="temp-gate-1") == 1
    assert value(second, "device_last_seen_timestamp_seconds", device="temp-gate-1") > 0
    assert value(second, "outbox_last_seq") >= temperatures(second)
    assert value(second, "outbox_size_bytes") > 0
    assert any(
        name == "estate_gateway_modbus_transactions_total" and v > 0
        for (name, _), v in second.items()
    )


async def test_a_taken_port_is_logged_and_the_gateway_runs_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(
            write_config(
                tmp_path / "gw" / "config.yaml",
                brokers=["mqtt://127.0.0.1:9"],
                metrics={"port": port},
            )
        )
        daemon.start()
        try:
            await daemon.wait_for_log("metrics endpoint not started, the gateway runs without it")
            await daemon.wait_for_log("gateway running")
            before = daemon.last_seq()
            await daemon.wait_for_commit(after=before)  # readings still become durable
            daemon.signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait, 10) == 0
        finally:
            daemon.stop()
    assert f"port={port}" in daemon.output()


async def _closed_by_server(reader: asyncio.StreamReader) -> None:
    """Return once the server closed the connection (FIN, or RST over unread input)."""
    try:
        while await reader.read(4096):
            pass
    except ConnectionResetError:
        pass


def _metrics_daemon(tmp_path: Path, **metrics: float) -> tuple[Daemon, int]:
    """A started daemon (no broker needed) with these metrics options, and its port."""
    port = free_port()
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=["mqtt://127.0.0.1:9"],
        metrics={"port": port, **metrics},
    )
    daemon = Daemon(config)
    daemon.start()
    return daemon, port


async def test_idle_sockets_cannot_keep_a_scrape_out(tmp_path: Path) -> None:
    # A long idle timeout: any socket closed early was closed by the cap of 8.
    daemon, port = _metrics_daemon(tmp_path, max_connections=8, idle_timeout_s=30.0)
    url = f"http://127.0.0.1:{port}/metrics"
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await daemon.wait_for_log("metrics endpoint listening")
        for n in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if n % 2:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append((reader, writer))
        started = time.monotonic()
        samples = await asyncio.to_thread(scrape, url)
        assert value(samples, "start_time_seconds") > 0
        assert time.monotonic() - started < 2.0
        # The server holds at most 8: the 42 oldest idle ones were dropped for room.
        async with asyncio.timeout(10):
            await asyncio.gather(*(_closed_by_server(reader) for reader, _ in idle[:42]))
        assert await asyncio.to_thread(scrape, url)
    finally:
        for _reader, writer in idle:
            writer.close()
        daemon.stop()


async def test_an_idle_connection_is_closed_after_idle_timeout_s(tmp_path: Path) -> None:
    daemon, port = _metrics_daemon(tmp_path, idle_timeout_s=0.3)
    try:
        await daemon.wait_for_log("metrics endpoint listening")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metr")
        started = time.monotonic()
        async with asyncio.timeout(10):
            await _closed_by_server(reader)
        assert time.monotonic() - started < 3.0  # the old fixed timeout was 5 s
        writer.close()
    finally:
        daemon.stop()
