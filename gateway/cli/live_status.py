"""``status --live``: the gateway at a glance, refreshed in place, for the installer at the gate.

Two sources, read each refresh:

- the running daemon's metrics endpoint (``metrics:`` in the config), for what
  only the daemon knows: each device's state, last reading, last seen and
  error counters, and the broker link. Parsed with ``prometheus_client.parser``;
- the outbox database (``gateway.outbox.report.read_report``), for the backlog. It
  answers even when the daemon is down.

``gather`` reads both into a ``LiveData``; ``render`` turns that into a rich
renderable and does no I/O, so it is tested with plain data. ``run_live`` loops
until Ctrl-C, which exits 0.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gateway.config import LoadedConfig
from gateway.outbox.report import NoDatabaseError, OutboxReport, read_report

FETCH_TIMEOUT_S = 2.0
PREFIX = "estate_gateway_"
# DeviceHealth counters shown as errors; the others (frames, polls, passes...)
# count normal traffic.
ERROR_COUNTERS = (
    "frames_discarded",
    "lines_discarded",
    "bytes_discarded",
    "timeouts",
    "poll_failures",
    "device_errors",
    "reader_errors",
    "port_down",
    "frames_unexpected",
    "payloads_undecodable",
    "invalid_readings",
    "missed_readings",
)
_STATE_STYLES = {"online": "bold green", "offline": "bold red", "error": "bold yellow"}


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    state: str
    last_reading: float | None = None
    last_seen: float | None = None
    readings: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What the metrics endpoint says about the running daemon."""

    gateway: str | None = None
    site: str | None = None
    version: str | None = None
    started_at: float | None = None
    connected: bool = False
    broker: str | None = None
    reconnects: int = 0
    batches_sent: int = 0
    puback_avg_s: float | None = None
    devices: list[DeviceView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LiveData:
    """One refresh: either side may be missing, with the reason."""

    gateway: str
    metrics_url: str | None  # None: metrics disabled in the config
    now: float
    daemon: DaemonView | None = None
    daemon_error: str | None = None
    outbox: OutboxReport | None = None
    outbox_error: str | None = None
    brokers: tuple[str, ...] = ()  # as configured, shown until the daemon has connected


def parse_metrics(text: str) -> DaemonView:
    """Read the exposition text of the gateway's ``/metrics`` into a ``DaemonView``.

    Raises:
        ValueError: the text is not Prometheus exposition format.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))

    def one(name: str) -> float | None:
        found = samples.get(PREFIX + name)
        return found[0][1] if found else None

    def by_device(name: str) -> dict[str, float]:
        return {labels["device"]: value for labels, value in samples.get(PREFIX + name, [])}

    info = samples.get(PREFIX + "info", [({}, 0.0)])[0][0]
    broker = samples.get(PREFIX + "mqtt_broker_info")
    states = {
        labels["device"]: labels["state"]
        for labels, value in samples.get(PREFIX + "device_state", [])
        if value == 1
    }
    last_reading = by_device("device_last_reading_timestamp_seconds")
    last_seen = by_device("device_last_seen_timestamp_seconds")
    readings: dict[str, int] = defaultdict(int)
    for labels, value in samples.get(PREFIX + "readings_total", []):
        readings[labels["device"]] += int(value)
    errors: dict[str, dict[str, int]] = defaultdict(dict)
    for labels, value in samples.get(PREFIX + "device_events_total", []):
        if labels["counter"] in ERROR_COUNTERS and value > 0:
            errors[labels["device"]][labels["counter"]] = int(value)
    latency_count = one("mqtt_puback_latency_seconds_count") or 0.0
    latency_sum = one("mqtt_puback_latency_seconds_sum") or 0.0
    started = one("start_time_seconds")
    return DaemonView(
        gateway=info.get("gateway"),
        site=info.get("site"),
        version=info.get("version"),
        started_at=started,
        connected=(one("mqtt_connected") or 0.0) == 1,
        broker=broker[0][0].get("broker") if broker else None,
        reconnects=int(one("mqtt_reconnects_total") or 0),
        batches_sent=int(one("mqtt_batches_sent_total") or 0),
        puback_avg_s=latency_sum / latency_count if latency_count else None,
        devices=[
            DeviceView(
                id=device,
                state=state,
                last_reading=last_reading.get(device),
                last_seen=last_seen.get(device),
                readings=readings.get(device, 0),
                errors=errors.get(device, {}),
            )
            for device, state in sorted(states.items())
        ],
    )


def fetch_metrics(url: str, *, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """GET the metrics text.

    Raises:
        OSError: not reachable (refused, timed out, HTTP error).
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # our own loopback endpoint
        body: bytes = response.read()
    return body.decode("utf-8")


def gather(loaded: LoadedConfig, *, now: float | None = None) -> LiveData:
    """Read the daemon's metrics and the outbox once; failures become reasons."""
    config = loaded.config
    url = config.metrics.url if config.metrics.enabled else None
    daemon: DaemonView | None = None
    daemon_error: str | None = None
    if url is None:
        daemon_error = "metrics are disabled in the config (metrics.enabled: false)"
    else:
        try:
            daemon = parse_metrics(fetch_metrics(url))
        except urllib.error.URLError as exc:
            daemon_error = f"not reachable at {url}: {exc.reason}"
        except (OSError, ValueError) as exc:
            daemon_error = f"not reachable at {url}: {exc}"
    outbox: OutboxReport | None = None
    outbox_error: str | None = None
    try:
        outbox = read_report(loaded.data_dir)
    except NoDatabaseError as exc:
        outbox_error = str(exc)
    except sqlite3.DatabaseError as exc:
        outbox_error = f"cannot read the outbox database: {exc}"
    return LiveData(
        gateway=f"{config.gateway.site}/{config.gateway.id}",
        metrics_url=url,
        now=time.time() if now is None else now,
        daemon=daemon,
        daemon_error=daemon_error,
        outbox=outbox,
        outbox_error=outbox_error,
        brokers=tuple(config.mqtt.brokers),
    )


# ------------------------------------------------------------------ render


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    age = max(0.0, now - then)
    if age < 60:
        return f"{age:.1f} s ago"
    if age < 3600:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _header(data: LiveData) -> Text:
    header = Text.assemble(("Estate gateway ", "bold"), (data.gateway, "bold cyan"))
    clock = time.strftime("%H:%M:%S", time.localtime(data.now))
    daemon = data.daemon
    warning = ""
    if daemon is not None:
        up = None if daemon.started_at is None else data.now - daemon.started_at
        header.append(f"   daemon running (up {_duration(up)})", style="green")
        expected = data.gateway.split("/", 1)[1]
        if daemon.gateway is not None and daemon.gateway != expected:
            warning = f"WARNING: {data.metrics_url} is gateway {daemon.gateway}, not {expected}"
    else:
        header.append("   daemon: NOT REACHABLE", style="bold red")
    header.append(f"   updated {clock}", style="dim")
    if warning:
        header.append("\n" + warning, style="bold red")
    return header


def _devices(data: LiveData) -> RenderableType:
    daemon = data.daemon
    if daemon is None:
        return Panel(
            Text(
                f"{data.daemon_error}\nDevice states and the broker link live in the daemon; "
                "is it running?",
                style="red",
            ),
            title="devices",
            border_style="red",
        )
    table = Table(title="devices", expand=True, title_justify="left")
    table.add_column("device", style="bold")
    table.add_column("state")
    table.add_column("last reading")
    table.add_column("last seen")
    table.add_column("readings", justify="right")
    table.add_column("errors")
    for device in daemon.devices:
        errors = ", ".join(f"{name} {count}" for name, count in sorted(device.errors.items()))
        table.add_row(
            device.id,
            Text(device.state, style=_STATE_STYLES.get(device.state, "dim")),
            _ago(data.now, device.last_reading),
            _ago(data.now, device.last_seen),
            str(device.readings),
            Text(errors or "none", style="yellow" if errors else "dim"),
        )
    if not daemon.devices:
        table.add_row("(no devices configured)", "", "", "", "", "")
    return table


def _facts_grid() -> Table:
    """A two-column grid of facts: the name in bold, then the value."""
    grid = Table.grid(padding=(0, 2), expand=True)
    grid.add_column(style="bold")
    grid.add_column()
    return grid


def _broker(data: LiveData) -> RenderableType:
    daemon = data.daemon
    grid = _facts_grid()
    if daemon is None:
        grid.add_row("link", Text("unknown (daemon not reachable)", style="red"))
        return Panel(grid, title="broker", border_style="red")
    link = (
        Text("connected", style="bold green")
        if daemon.connected
        else Text("disconnected", style="bold red")
    )
    grid.add_row("link", link)
    if daemon.broker is not None:
        grid.add_row("broker", daemon.broker)
    else:
        grid.add_row("broker", "none yet")
        grid.add_row("configured", "\n".join(data.brokers) or "-")
    grid.add_row("reconnects", str(daemon.reconnects))
    grid.add_row("batches sent", str(daemon.batches_sent))
    latency = "-" if daemon.puback_avg_s is None else f"{daemon.puback_avg_s * 1000:.1f} ms"
    grid.add_row("PUBACK (avg)", latency)
    return Panel(grid, title="broker", border_style="green" if daemon.connected else "red")


def _backlog(data: LiveData) -> RenderableType:
    report = data.outbox
    grid = _facts_grid()
    if report is None:
        grid.add_row("outbox", Text(data.outbox_error or "unknown", style="red"))
        return Panel(grid, title="backlog", border_style="red")
    waiting = report.backlog["alarm"] + report.backlog["routine"]
    grid.add_row(
        "alarm",
        Text(str(report.backlog["alarm"]), style="bold red" if report.backlog["alarm"] else ""),
    )
    grid.add_row("routine", str(report.backlog["routine"]))
    grid.add_row("command results", str(report.backlog["result"]))
    grid.add_row(
        "oldest unsent", _duration(report.oldest_unsent_age_s) + " old" if waiting else "-"
    )
    grid.add_row("last sync", report.last_sync or "never")
    grid.add_row("last seq", f"{report.last_seq} (epoch {report.epoch})")
    grid.add_row("database", f"{report.database_bytes / (1024 * 1024):.2f} MiB")
    return Panel(grid, title="backlog", border_style="yellow" if waiting else "green")


def render(data: LiveData) -> RenderableType:
    """The whole view for one refresh (no I/O)."""
    bottom = Table.grid(expand=True, padding=(0, 1))
    bottom.add_column(ratio=1)
    bottom.add_column(ratio=1)
    bottom.add_row(_broker(data), _backlog(data))
    return Group(_header(data), _devices(data), bottom, Text("Ctrl-C to quit", style="dim"))


def run_live(
    loaded: LoadedConfig,
    *,
    interval_s: float = 1.0,
    console: Console | None = None,
    refreshes: int | None = None,
) -> int:
    """Refresh the view every ``interval_s`` until Ctrl-C (or ``refreshes`` times); exit 0."""
    console = console or Console()
    done = 0
    try:
        with Live(console=console, auto_refresh=False) as live:
            while refreshes is None or done < refreshes:
                live.update(render(gather(loaded)), refresh=True)
                done += 1
                if refreshes is None or done < refreshes:
                    time.sleep(interval_s)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the installer leaves: not an error
    return 0
