"""Ingest into the outbox: readings per second made durable (committed and synced).

Target (backbone issue): >= 100,000 readings/s on this 2-core machine.

    .venv/bin/python -m benchmarks.bench_outbox_ingest [--readings N] [--runs R]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_outbox, bench_parser, median_of, repeat_runs
from drivers.base import ReadingType, SystemClock, make_reading


async def one_run(readings: int, chunk: int) -> float:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        outbox = bench_outbox(Path(tmp), clock)
        await outbox.open()
        runner = asyncio.create_task(outbox.run())
        data = {"celsius": 36.6, "threshold": 37.3, "fever": False}
        started = time.perf_counter()
        for start in range(0, readings, chunk):
            for _ in range(min(chunk, readings - start)):
                outbox.put(make_reading(clock, "temp-gate-1", ReadingType.TEMPERATURE_BODY, data))
            await asyncio.sleep(0)  # let the committer run, as a busy daemon would
        await outbox.flush()  # committed and fdatasync'ed: durable
        elapsed = time.perf_counter() - started
        assert outbox.stats.committed == readings
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await outbox.close()
    return readings / elapsed


def main() -> None:
    parser = bench_parser(__doc__, runs=5)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=1000, help="readings put per loop turn")
    args = parser.parse_args()
    rates = repeat_runs(
        args.runs,
        lambda _: asyncio.run(one_run(args.readings, args.chunk)),
        lambda rate: f"{rate:,.0f} readings/s",
    )
    median = median_of(rates, float)
    print(f"median: {median:,.0f} readings/s durable; target 100,000/s -> {median / 100_000:.2f}x")


if __name__ == "__main__":
    main()
