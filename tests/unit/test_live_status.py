"""status --live: metrics text -> DaemonView, and LiveData -> the rendered view (no I/O)."""

from __future__ import annotations

import io

from rich.console import Console

from gateway.cli.live_status import DaemonView, DeviceView, LiveData, parse_metrics, render
from gateway.outbox.report import OutboxReport

NOW = 1_795_000_100.0

METRICS = """\
# TYPE estate_gateway_info gauge
estate_gateway_info{gateway="north-gate-1",site="changqing",version="0.1.0"} 1.0
# TYPE estate_gateway_start_time_seconds gauge
estate_gateway_start_time_seconds 1795000000.0
# TYPE estate_gateway_readings counter
estate_gateway_readings_total{device="temp-gate-1",type="temperature.body"} 40.0
estate_gateway_readings_total{device="temp-gate-1",type="device.status"} 2.0
# TYPE estate_gateway_device_last_reading_timestamp_seconds gauge
estate_gateway_device_last_reading_timestamp_seconds{device="temp-gate-1"} 1795000098.0
# TYPE estate_gateway_mqtt_connected gauge
estate_gateway_mqtt_connected 1.0
# TYPE estate_gateway_mqtt_broker_info gauge
estate_gateway_mqtt_broker_info{broker="mqtt://10.0.0.2:1883"} 1.0
# TYPE estate_gateway_mqtt_reconnects counter
estate_gateway_mqtt_reconnects_total 3.0
# TYPE estate_gateway_mqtt_puback_latency_seconds histogram
estate_gateway_mqtt_puback_latency_seconds_bucket{le="+Inf"} 4.0
estate_gateway_mqtt_puback_latency_seconds_count 4.0
estate_gateway_mqtt_puback_latency_seconds_sum 0.08
# TYPE estate_gateway_device_state gauge
estate_gateway_device_state{device="temp-gate-1",state="online"} 1.0
estate_gateway_device_state{device="temp-gate-1",state="unknown"} 0.0
estate_gateway_device_state{device="door-east-1",state="online"} 0.0
estate_gateway_device_state{device="door-east-1",state="offline"} 1.0
# TYPE estate_gateway_device_last_seen_timestamp_seconds gauge
estate_gateway_device_last_seen_timestamp_seconds{device="temp-gate-1"} 1795000099.5
# TYPE estate_gateway_device_events counter
estate_gateway_device_events_total{counter="timeouts",device="door-east-1"} 5.0
estate_gateway_device_events_total{counter="frames",device="door-east-1"} 90.0
estate_gateway_device_events_total{counter="poll_failures",device="door-east-1"} 0.0
"""

REPORT = OutboxReport(
    database="/var/lib/estate-gateway/outbox.sqlite3",
    epoch="k3f9x2ab",
    last_seq=1042,
    backlog={"alarm": 2, "routine": 118, "result": 0},
    oldest_unsent="2026-11-29T08:00:00.123Z",
    oldest_unsent_age_s=75.0,
    last_sync=None,
    database_bytes=3 * 1024 * 1024,
)


def text_of(data: LiveData) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(render(data))
    out = console.file.getvalue()
    assert isinstance(out, str)
    return out


def test_parse_metrics() -> None:
    view = parse_metrics(METRICS)
    assert (view.gateway, view.site, view.started_at) == ("north-gate-1", "changqing", 1795000000)
    assert view.connected and view.broker == "mqtt://10.0.0.2:1883" and view.reconnects == 3
    assert view.puback_avg_s == 0.02
    door, gate = view.devices
    assert (door.id, door.state, door.errors) == ("door-east-1", "offline", {"timeouts": 5})
    assert door.last_seen is None and door.readings == 0
    assert (gate.id, gate.state, gate.readings) == ("temp-gate-1", "online", 42)
    assert (gate.last_reading, gate.last_seen) == (1795000098.0, 1795000099.5)


def test_render_a_running_gateway() -> None:
    data = LiveData(
        gateway="changqing/north-gate-1",
        metrics_url="http://127.0.0.1:9108/metrics",
        now=NOW,
        daemon=parse_metrics(METRICS),
        outbox=REPORT,
    )
    out = text_of(data)
    assert "daemon running (up 2 min)" in out
    assert "temp-gate-1" in out and "online" in out and "2.0 s ago" in out and "0.5 s ago" in out
    assert "door-east-1" in out and "offline" in out and "timeouts 5" in out
    assert "connected" in out and "mqtt://10.0.0.2:1883" in out and "20.0 ms" in out
    assert "118" in out and "1 min old" in out
    assert "1042 (epoch k3f9x2ab)" in out and "NOT REACHABLE" not in out


def test_render_when_the_daemon_is_not_reachable() -> None:
    data = LiveData(
        gateway="changqing/north-gate-1",
        metrics_url="http://127.0.0.1:9108/metrics",
        now=NOW,
        daemon_error="not reachable at http://127.0.0.1:9108/metrics: Connection refused",
        outbox=REPORT,
    )
    out = text_of(data)
    assert "NOT REACHABLE" in out and "Connection refused" in out
    assert "unknown (daemon not reachable)" in out
    assert "118" in out  # the backlog still shows: it comes from the database


def test_render_without_a_database_and_a_foreign_endpoint() -> None:
    data = LiveData(
        gateway="changqing/north-gate-1",
        metrics_url="http://127.0.0.1:9108/metrics",
        now=NOW,
        daemon=DaemonView(gateway="south-gate-2", devices=[DeviceView("x", "unknown")]),
        outbox_error="no outbox database at /tmp/data/outbox.sqlite3 (has the gateway run yet?)",
        brokers=("mqtts://mqtt.example.net:8883",),
    )
    out = text_of(data)
    assert "is gateway south-gate-2, not north-gate-1" in out
    assert "no outbox database" in out
    assert "disconnected" in out
    assert "none yet" in out and "mqtts://mqtt.example.net:8883" in out
