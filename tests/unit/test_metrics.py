"""GatewayCollector and the latency histogram: stats in, Prometheus exposition out.

Rendered without a socket (``MetricsServer.render``); the outbox is a real
SQLite file in ``tmp_path``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.base import DeviceHealth, DeviceState, Driver, Priority, ReadingType, make_reading
from drivers.transports.bus_pool import BusPool
from drivers.transports.config import ModbusRtuTransportConfig
from gateway.config import MetricsConfig
from gateway.outbox.store import Outbox
from gateway.runtime.metrics import GatewayCollector, MetricsSources
from gateway.runtime.metrics_server import MetricsServer
from gateway.uplink.stats import PUBACK_BUCKETS_S, LatencyHistogram, UplinkStats
from tests.fakes import FakeClock, RecordingSink
from tests.outboxes import site_outbox


class StubDriver:
    def __init__(self, device_id: str, clock: FakeClock) -> None:
        self.device_id = device_id
        self.health = DeviceHealth(device_id, RecordingSink(), clock)

    async def run(self) -> None:
        raise NotImplementedError

    def actions(self) -> frozenset[str]:
        return frozenset()

    async def execute(self, action: str, params: object) -> None:
        raise NotImplementedError


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = site_outbox(tmp_path, FakeClock(), boot_id="boot-1")
    await box.open()
    yield box
    await box.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_upper_inclusive() -> None:
    histogram = LatencyHistogram()
    for value in (0.005, 0.0051, 0.3, 99.0):
        histogram.observe(value)
    assert histogram.counts[0] == 1  # 0.005 <= le="0.005"
    assert histogram.counts[1] == 1
    assert histogram.counts[PUBACK_BUCKETS_S.index(0.5)] == 1
    assert histogram.counts[-1] == 1  # above every bound
    assert histogram.sum_s == pytest.approx(99.3101)


async def test_collector_reports_every_source(outbox: Outbox) -> None:
    clock = FakeClock(wall=1_795_000_000.0)
    door = StubDriver("door-east-1", clock)
    gate = StubDriver("temp-gate-1", clock)
    door.health.set_state(DeviceState.ONLINE)
    door.health.seen()
    gate.health.count("frames_discarded", 2)
    gate.health.count("lines_discarded")
    gate.health.count("bytes_discarded", 17)
    gate.health.count("timeouts", 3)
    for _ in range(3):
        outbox.put(make_reading(clock, "temp-gate-1", ReadingType.TEMPERATURE_BODY, {"c": 1}))
    outbox.put(make_reading(clock, "door-east-1", ReadingType.DOOR_EVENT, {"e": 1}, Priority.ALARM))
    await outbox.commit()
    uplink = UplinkStats(connected=True, broker="mqtt://127.0.0.1:1883", connects=3, reconnects=2)
    uplink.puback_latency.observe(0.004)
    uplink.puback_latency.observe(0.2)
    drivers: dict[str, Driver] = {"door-east-1": door, "temp-gate-1": gate}
    buses = BusPool()
    bus = buses.get(ModbusRtuTransportConfig(type="modbus_rtu", port="/dev/ttyUSB0"))
    bus.stats.timeouts, bus.stats.bad_replies = 2, 5
    sources = MetricsSources(
        site="changqing",
        gateway_id="north-gate-1",
        outbox=outbox,
        uplink=uplink,
        drivers=drivers,
        buses=buses,
        command_outcomes=Counter({("done", "none"): 4, ("rejected", "expired"): 1}),
        commands_dropped=lambda: 7,
        command_results_held=lambda: 2,
        command_results_held_dropped=lambda: 1,
    )
    server = MetricsServer(MetricsConfig(), GatewayCollector(sources, started_at=123.0))
    got = samples((await server.render()).decode())

    def value(name: str, **labels: str) -> float:
        return got[("estate_gateway_" + name, frozenset(labels.items()))]

    assert value("readings_total", device="temp-gate-1", type="temperature.body") == 3
    assert value("readings_total", device="door-east-1", type="door.event") == 1
    assert value("outbox_backlog", lane="routine") == 3
    assert value("outbox_backlog", lane="alarm") == 1
    assert value("outbox_oldest_unsent_age_seconds") >= 0
    assert value("outbox_size_bytes") > 0
    assert value("mqtt_connected") == 1
    assert value("mqtt_broker_info", broker="mqtt://127.0.0.1:1883") == 1
    assert value("mqtt_reconnects_total") == 2
    assert value("mqtt_puback_latency_seconds_count") == 2
    assert value("mqtt_puback_latency_seconds_bucket", le="0.005") == 1
    assert value("mqtt_puback_latency_seconds_bucket", le="+Inf") == 2
    assert value("commands_total", status="done", reason="none") == 4
    assert value("commands_total", status="rejected", reason="expired") == 1
    assert value("commands_dropped_total") == 7
    assert value("command_results_held") == 2
    assert value("command_results_held_dropped_total") == 1
    assert value("device_online", device="door-east-1") == 1
    assert value("device_online", device="temp-gate-1") == 0
    assert value("device_state", device="temp-gate-1", state="unknown") == 1
    assert value("device_state", device="door-east-1", state="online") == 1
    assert value("device_last_seen_timestamp_seconds", device="door-east-1") == clock.wall()
    assert value("device_frames_rejected_total", device="temp-gate-1") == 3
    assert value("device_bytes_discarded_total", device="temp-gate-1") == 17
    assert value("device_events_total", device="temp-gate-1", counter="timeouts") == 3
    assert value("modbus_timeouts_total", bus="rtu:/dev/ttyUSB0") == 2
    assert value("modbus_bad_replies_total", bus="rtu:/dev/ttyUSB0") == 5
    assert value("start_time_seconds") == 123.0
    assert value("info", site="changqing", gateway="north-gate-1", version="0.1.0") == 1


async def test_collector_reads_live_mappings(outbox: Outbox) -> None:
    """Devices added to the drivers mapping after start (a reload) appear at the next scrape."""
    clock = FakeClock()
    drivers: dict[str, Driver] = {}
    sources = MetricsSources(
        site="s",
        gateway_id="g",
        outbox=outbox,
        uplink=UplinkStats(),
        drivers=drivers,
        buses=BusPool(),
        command_outcomes=Counter(),
        commands_dropped=lambda: 0,
    )
    server = MetricsServer(MetricsConfig(), GatewayCollector(sources))
    assert "band-receiver-1" not in (await server.render()).decode()
    drivers["band-receiver-1"] = StubDriver("band-receiver-1", clock)
    assert 'device_online{device="band-receiver-1"} 0.0' in (await server.render()).decode()
