"""Prometheus metrics: one collector over the daemon's own stats, served on loopback.

Nothing imports ``prometheus_client`` in the daemon: the outbox, the
uplink, the command processor and the drivers keep plain-Python counters
(``OutboxStats``, ``UplinkStats``, ``CommandProcessor.outcomes``,
``DeviceHealth.counters``, ``BusStats``), and ``GatewayCollector`` turns them
into metric families at scrape time. A scrape therefore costs the hot paths
nothing, and the figures are the same ones the status message and
``status`` report.

The endpoint (``gateway.runtime.metrics_server``) is a small asyncio HTTP
server rather than ``prometheus_client.start_http_server``: that one runs
collectors in its own thread, where they would read dicts the event loop is changing, and could not
ask the outbox (whose SQLite connection belongs to its worker) for the oldest
unsent reading. Here a scrape runs on the loop like everything else, awaits
that query through the outbox's owner, then renders the collector's families
with ``gateway.runtime.exposition`` (no process-global registry; the same
bytes ``generate_latest`` writes, without the package's 1.3 MB of imports).
STYLE.md §11: no threads where asyncio suffices.

Metric names (all prefixed ``estate_gateway_``) are listed in README.md,
"Metrics".
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from drivers.base import DeviceState, Driver
from drivers.transports.bus_pool import BusPool
from gateway.outbox.store import Lane, Outbox
from gateway.runtime.exposition import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from gateway.timefmt import parse_rfc3339
from gateway.uplink.stats import LatencyHistogram, UplinkStats
from gateway.version import GATEWAY_VERSION

_LOGGER = logging.getLogger(__name__)

PREFIX = "estate_gateway_"
# Counters of discarded input: what a codec threw away while resynchronising.
REJECTED_FRAME_COUNTERS = ("frames_discarded", "lines_discarded")
_STATES = (*(s.value for s in DeviceState), "unknown")


@dataclass(frozen=True, slots=True)
class MetricsSources:
    """What the collector reads; all owned elsewhere, read only at scrape time."""

    site: str
    gateway_id: str
    outbox: Outbox
    uplink: UplinkStats
    drivers: Mapping[str, Driver]
    buses: BusPool
    command_outcomes: Mapping[tuple[str, str], int]
    commands_dropped: Callable[[], int]
    command_store_syncs: Callable[[], int] = lambda: 0
    # Results wait in the command store (gateway.commands.results), not the outbox.
    command_results_backlog: Callable[[], int] = lambda: 0
    # Results the store could not write, sent from memory (ResultQueue.hold).
    command_results_held: Callable[[], int] = lambda: 0
    command_results_held_dropped: Callable[[], int] = lambda: 0


class GatewayCollector:
    """A collector (``prometheus_client``'s shape) over the daemon's stats objects."""

    def __init__(self, sources: MetricsSources, *, started_at: float | None = None) -> None:
        self._src = sources
        self._started_at = time.time() if started_at is None else started_at
        self._oldest_unsent: str | None = None

    async def refresh(self) -> None:
        """Fetch what only the outbox's owner can read (the oldest unsent reading)."""
        self._oldest_unsent = await self._src.outbox.oldest_unsent_ts()

    def collect(self) -> Iterable[Metric]:
        """Yield every metric family, built from the stats as they are now."""
        yield from self._gateway()
        yield from self._readings()
        yield from self._outbox()
        yield from self._mqtt()
        yield from self._commands()
        yield from self._devices()
        yield from self._buses()

    # ------------------------------------------------------------ families

    def _gateway(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            PREFIX + "info", "This gateway (value 1).", labels=["site", "gateway", "version"]
        )
        info.add_metric([self._src.site, self._src.gateway_id, GATEWAY_VERSION], 1)
        yield info
        yield GaugeMetricFamily(
            PREFIX + "start_time_seconds",
            "When the daemon started, seconds since the Unix epoch.",
            value=self._started_at,
        )

    def _readings(self) -> Iterable[Metric]:
        stats = self._src.outbox.stats
        readings = CounterMetricFamily(
            PREFIX + "readings",
            "Readings accepted into the outbox (counted at their commit), by device and type.",
            labels=["device", "type"],
        )
        for (device, type_), count in list(stats.by_device_type.items()):
            readings.add_metric([device, type_.value], count)
        yield readings
        last = GaugeMetricFamily(
            PREFIX + "device_last_reading_timestamp_seconds",
            "Wall-clock time of each device's latest reading.",
            labels=["device"],
        )
        for device, wall in list(stats.last_reading_wall.items()):
            last.add_metric([device], wall)
        yield last

    def _outbox(self) -> Iterable[Metric]:
        outbox = self._src.outbox
        stats = outbox.stats
        backlog = GaugeMetricFamily(
            PREFIX + "outbox_backlog",
            "Rows waiting to be sent, by lane (alarm, routine, result).",
            labels=["lane"],
        )
        for lane, count in stats.backlog.items():
            waiting = self._src.command_results_backlog() if lane is Lane.RESULT else count
            backlog.add_metric([lane.value], waiting)
        yield backlog
        age = 0.0
        if self._oldest_unsent is not None:
            age = max(0.0, time.time() - parse_rfc3339(self._oldest_unsent))
        family: Callable[..., Metric]
        for family, name, help_text, value in (
            (
                GaugeMetricFamily,
                "outbox_oldest_unsent_age_seconds",
                "Age of the oldest reading not yet PUBACKed (0 when none waits).",
                age,
            ),
            (
                GaugeMetricFamily,
                "outbox_last_seq",
                "Last seq given out in this epoch.",
                stats.last_seq,
            ),
            (
                CounterMetricFamily,
                "outbox_dropped",
                "Routine readings shed by the size cap (each gap is explained by gateway.dropped).",
                stats.dropped,
            ),
            (CounterMetricFamily, "outbox_syncs", "fdatasync calls on the WAL.", stats.syncs),
            (
                GaugeMetricFamily,
                "outbox_dead_letter",
                "Messages the broker refused (or that cannot be published), kept aside.",
                stats.dead_letter,
            ),
            (
                GaugeMetricFamily,
                "outbox_size_bytes",
                "Size of the outbox database and its WAL on disk.",
                _file_sizes(outbox.path),
            ),
        ):
            yield family(PREFIX + name, help_text, value=value)
        if stats.last_ack_at is not None:
            yield GaugeMetricFamily(
                PREFIX + "outbox_last_ack_timestamp_seconds",
                "When acknowledged rows were last deleted (the last successful sync).",
                value=stats.last_ack_at,
            )

    def _mqtt(self) -> Iterable[Metric]:
        stats = self._src.uplink
        yield GaugeMetricFamily(
            PREFIX + "mqtt_connected", "1 while connected to a broker.", value=int(stats.connected)
        )
        if stats.broker is not None:
            broker = GaugeMetricFamily(
                PREFIX + "mqtt_broker_info",
                "The broker of the current (or last) connection (value 1).",
                labels=["broker"],
            )
            broker.add_metric([stats.broker], 1)
            yield broker
        for name, help_text, value in (
            ("mqtt_connects", "Successful broker connections.", stats.connects),
            ("mqtt_reconnects", "Connections after the first.", stats.reconnects),
            ("mqtt_batches_sent", "Batches PUBACKed by the broker.", stats.batches_sent),
            ("mqtt_readings_sent", "Readings in PUBACKed batches.", stats.readings_sent),
            ("mqtt_commands_received", "Messages on the commands topic.", stats.commands_received),
            ("mqtt_inbound_oversize", "Inbound messages dropped unread.", stats.inbound_oversize),
            (
                "mqtt_inbound_failures",
                "Inbound messages whose handling raised.",
                stats.inbound_failures,
            ),
            ("mqtt_set_aside", "Messages moved to the dead-letter table.", stats.set_aside),
            ("mqtt_batch_splits", "Batches halved as too large for the broker.", stats.splits),
        ):
            yield CounterMetricFamily(PREFIX + name, help_text, value=value)
        yield _histogram(
            PREFIX + "mqtt_puback_latency_seconds",
            "Time from publishing a batch to its PUBACK.",
            stats.puback_latency,
        )

    def _commands(self) -> Iterable[Metric]:
        commands = CounterMetricFamily(
            PREFIX + "commands",
            "Command results by status and reason (reason none for done).",
            labels=["status", "reason"],
        )
        for (status, reason), count in list(self._src.command_outcomes.items()):
            commands.add_metric([status, reason], count)
        yield commands
        yield CounterMetricFamily(
            PREFIX + "commands_dropped",
            "Commands dropped unexecuted because the command queue was full.",
            value=self._src.commands_dropped(),
        )
        yield CounterMetricFamily(
            PREFIX + "command_store_syncs",
            "fdatasync calls on the command store's WAL.",
            value=self._src.command_store_syncs(),
        )
        yield GaugeMetricFamily(
            PREFIX + "command_results_held",
            "Command results the command store could not write, waiting in memory (not durable).",
            value=self._src.command_results_held(),
        )
        yield CounterMetricFamily(
            PREFIX + "command_results_held_dropped",
            "Held command results dropped beyond the in-memory bound: never sent.",
            value=self._src.command_results_held_dropped(),
        )

    def _devices(self) -> Iterable[Metric]:
        online = GaugeMetricFamily(
            PREFIX + "device_online", "1 while the device is online.", labels=["device"]
        )
        state = GaugeMetricFamily(
            PREFIX + "device_state",
            "The device's state, one series per state, 1 for the current one "
            "(unknown: not heard of since its driver started).",
            labels=["device", "state"],
        )
        seen = GaugeMetricFamily(
            PREFIX + "device_last_seen_timestamp_seconds",
            "When the device last answered or spoke (wall clock).",
            labels=["device"],
        )
        rejected = CounterMetricFamily(
            PREFIX + "device_frames_rejected",
            "Frames or lines a codec discarded as garbage while resynchronising.",
            labels=["device"],
        )
        discarded = CounterMetricFamily(
            PREFIX + "device_bytes_discarded",
            "Bytes a codec discarded as garbage.",
            labels=["device"],
        )
        counters = CounterMetricFamily(
            PREFIX + "device_events",
            "Every counter a driver keeps (timeouts, poll_failures, frames...), by name.",
            labels=["device", "counter"],
        )
        for device_id, driver in list(self._src.drivers.items()):
            health = driver.health
            current = "unknown" if health.state is None else health.state.value
            online.add_metric([device_id], int(health.state is DeviceState.ONLINE))
            for name in _STATES:
                state.add_metric([device_id, name], int(name == current))
            if health.last_seen_wall is not None:
                seen.add_metric([device_id], health.last_seen_wall)
            values = dict(health.counters)
            rejected.add_metric(
                [device_id], sum(values.get(name, 0) for name in REJECTED_FRAME_COUNTERS)
            )
            discarded.add_metric([device_id], values.get("bytes_discarded", 0))
            for name, value in sorted(values.items()):
                counters.add_metric([device_id, name], value)
        yield from (online, state, seen, rejected, discarded, counters)

    def _buses(self) -> Iterable[Metric]:
        families = {
            name: CounterMetricFamily(PREFIX + f"modbus_{name}", help_text, labels=["bus"])
            for name, help_text in (
                ("transactions", "Modbus requests that went to the wire, retries included."),
                ("timeouts", "Modbus attempts that heard no reply at all."),
                ("bad_replies", "Modbus replies heard garbled or not matching (retried at once)."),
                ("exceptions", "Modbus exception responses."),
                ("connection_losses", "Times the Modbus line was lost and reopened."),
            )
        }
        for bus in self._src.buses.buses:
            stats = bus.stats
            families["transactions"].add_metric([bus.name], stats.transactions)
            families["timeouts"].add_metric([bus.name], stats.timeouts)
            families["bad_replies"].add_metric([bus.name], stats.bad_replies)
            families["exceptions"].add_metric([bus.name], stats.exceptions)
            families["connection_losses"].add_metric([bus.name], stats.connection_losses)
        yield from families.values()


def _histogram(name: str, help_text: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        cumulative += count
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", cumulative + histogram.counts[-1]))
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=histogram.sum_s)


def _file_sizes(path: Path) -> int:
    total = 0
    for candidate in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):
            total += os.stat(candidate).st_size
    return total
