"""The uplink's counters, read by the metrics endpoint and ``status --live``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Publish-to-PUBACK latency buckets, seconds: a loopback broker answers in a
# few ms, a mobile link in hundreds; publish_timeout_s (10 s default) caps it.
PUBACK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LatencyHistogram:
    """Observation counts per bucket (``counts[i]``: ``bounds[i-1] < x <= bounds[i]``;
    the last slot is above every bound), plus their sum: what a Prometheus
    histogram needs, without keeping any observation."""

    bounds: tuple[float, ...] = PUBACK_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(PUBACK_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds


@dataclass(slots=True)
class UplinkStats:
    connected: bool = False
    broker: str | None = None
    connects: int = 0
    reconnects: int = 0
    batches_sent: int = 0
    readings_sent: int = 0
    last_puback_latency_s: float | None = None
    commands_received: int = 0
    inbound_oversize: int = 0  # payloads dropped unread for their size
    inbound_failures: int = 0  # messages whose handling raised (a bug; logged)
    set_aside: int = 0  # messages moved to the dead-letter table this run
    splits: int = 0  # batches halved because the broker found them too large
    last_error: str | None = None
    puback_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
