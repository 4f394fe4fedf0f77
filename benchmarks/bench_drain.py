"""Drain a 1,000,000-reading backlog to a local mosquitto, with PUBACKs; peak RSS.

Targets: >= 100,000 readings/s (backbone issue); peak RSS of the daemon <= 55 MB (issue 8,
which lowered the backbone's 60 MB).
The real daemon process (no devices) starts on a pre-filled outbox; the drain
is timed from the first reading leaving the outbox to the last one.

    .venv/bin/python -m benchmarks.bench_drain [--readings N] [--runs R]
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.common import (
    backlog,
    bench_parser,
    medians,
    prefill,
    proc_status_kb,
    repeat_runs,
    temp_dir,
)
from tests.broker import Mosquitto
from tests.daemon import Daemon, write_config

PEAK_TARGET_MB = 55.0


def one_run(readings: int) -> tuple[float, float]:
    with temp_dir("bench-drain-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        try:
            config = write_config(root / "gw" / "config.yaml", brokers=[broker.url], devices=[])
            asyncio.run(prefill(root / "gw" / "data", readings))
            daemon = Daemon(config)
            daemon.start()
            assert daemon.proc is not None
            try:
                while backlog(daemon.database) >= readings:
                    time.sleep(0.01)
                started = time.perf_counter()
                peak = 0
                while True:
                    left = backlog(daemon.database)
                    peak = max(peak, proc_status_kb(daemon.proc.pid, "VmHWM"))
                    if left == 0:
                        break
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
                peak = max(peak, proc_status_kb(daemon.proc.pid, "VmHWM"))
            finally:
                daemon.stop()
        finally:
            broker.stop()
    return readings / elapsed, peak / 1024


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    results = repeat_runs(
        args.runs,
        lambda _: one_run(args.readings),
        lambda r: f"{r[0]:,.0f} readings/s drained, peak RSS {r[1]:.1f} MB",
    )
    rate, rss = medians(results)
    print(
        f"median: {rate:,.0f} readings/s (target 100,000/s -> {rate / 100_000:.2f}x); "
        f"peak RSS {rss:.1f} MB (target {PEAK_TARGET_MB:.0f} MB -> {rss / PEAK_TARGET_MB:.2f}x)"
    )


if __name__ == "__main__":
    main()
