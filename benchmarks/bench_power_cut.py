"""Power cuts under load, many of them: is every reading the platform saw still there?

The long version of tests/integration/test_power_cut.py (see tests/powercut.py
for the filesystem and the checks). Each run cuts the power ``--cuts`` times
under load (SIGKILL of the daemon, then every unsynced write dropped), and
reports the cuts, the readings the broker delivered, the unsynced bytes thrown
away, and what the checks found. Target: no duplicate id, no lost reading, no
integrity failure (CONTRACT 1.1: "a seq is never given to two different
readings").

    .venv/bin/python -m benchmarks.bench_power_cut [--cuts 30] [--runs 1]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from benchmarks.common import bench_parser, median_of, repeat_runs, temp_dir
from tests.broker import Mosquitto
from tests.powercut import PowerCutReport, run_power_cuts


async def one_run(cuts: int, seed: int) -> PowerCutReport:
    with temp_dir("bench-powercut-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        try:
            return await run_power_cuts(root / "run", broker, cuts=cuts, seed=seed)
        finally:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, runs=1)
    parser.add_argument("--cuts", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    def timed_run(n: int) -> tuple[PowerCutReport, float]:
        started = time.monotonic()
        report = asyncio.run(one_run(args.cuts, args.seed + n - 1))
        return report, time.monotonic() - started

    def describe(run: tuple[PowerCutReport, float]) -> str:
        report, took = run
        lines = [f"{report.summary()} ({took:.0f} s)"]
        return "\n".join(lines + [f"  {problem}" for problem in report.problems[:10]])

    results = repeat_runs(args.runs, timed_run, describe)
    problems = sum(len(report.problems) for report, _ in results)
    seen = median_of(results, lambda run: run[0].readings_seen)
    print(f"median readings seen per run: {seen:.0f}; problems: {problems} (target 0)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
