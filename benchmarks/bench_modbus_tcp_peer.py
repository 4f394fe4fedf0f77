"""Cost of ten Modbus TCP temperature gates, each polled every 100 ms.

The simulated gates run in a child process (each on its own loopback port, as
ten RS-485-to-Ethernet converters would be), so the figures are the gateway
side's alone: the buses, the pymodbus clients and the drivers. Each simulated
gate measures a passer-by every 0.3-0.5 s once it has been polled. Prints:

- CPU of the gateway process over the measured window, as % of one core;
- polls done vs expected (duration / 100 ms per gate): none lost or merged;
- readings accounted: reported + reported gaps == the gates' own counters;
- peak RSS of the gateway process (imports included).

Targets: <= 5 % of a core, <= 40 MB. Run from the repository root, on demand:

    .venv/bin/python -m benchmarks.bench_modbus_tcp_peer [--duration 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_parser, repeat_runs
from drivers.base import Reading, ReadingType, SystemClock
from drivers.temperature_gate import TemperatureGateConfig, TemperatureGateDriver, build_driver
from drivers.transports.bus_pool import BusPool
from tests.devices import stop_tasks

GATES = 10
POLL_INTERVAL_MS = 100
WARMUP_S = 1.0
READING_PERIOD_S = (0.3, 0.5)


# ---------------------------------------------------------------- child: the gates


async def serve(gates: int) -> None:
    """Run the simulated gates; report ports, then counters when asked."""
    from drivers.sim.temperature_gate import make_simulator  # child process only

    rng = random.Random(7)
    sims = []
    marks: list[dict[str, int]] = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in range(gates):
            config = TemperatureGateConfig.model_validate(
                {
                    "id": f"temp-gate-{n}",
                    "kind": "temperature_gate",
                    "transport": {"type": "modbus_tcp", "host": "127.0.0.1"},
                }
            )
            sims.append(make_simulator(config, Path(workdir), ambient=False))
        ports = [(await sim.start()).tcp_port for sim in sims]
        for sim in sims:
            mark: dict[str, int] = {}
            marks.append(mark)
            store = sim.server.slaves[sim.gate.slave]
            gate_hook = store.read_hook

            def hook(
                request: Any, gate_hook: Any = gate_hook, sim: Any = sim, mark: Any = mark
            ) -> None:
                gate_hook(request)
                mark.setdefault("first_counter", sim.gate.counter)
                mark["last_counter"] = sim.gate.counter
                mark["reads"] = mark.get("reads", 0) + 1

            store.read_hook = hook

        async def passers_by(sim: Any) -> None:
            while sim.gate.reads == 0:
                await asyncio.sleep(0.05)
            while True:
                await asyncio.sleep(rng.uniform(*READING_PERIOD_S))
                sim.inject_reading(round(rng.uniform(36.0, 37.0), 1))

        tasks = [asyncio.create_task(passers_by(sim), name="passers-by") for sim in sims]
        print(json.dumps({"ports": ports}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        for task in tasks:
            task.cancel()
        print(json.dumps({"marks": marks}), flush=True)
        for sim in sims:
            await sim.stop()


# ------------------------------------------------------------ parent: the gateway


class TallySink:
    def __init__(self) -> None:
        self.readings: Counter[str] = Counter()
        self.missed: Counter[str] = Counter()

    def put(self, reading: Reading) -> None:
        if reading.type is ReadingType.TEMPERATURE_BODY:
            self.readings[reading.device] += 1
            self.missed[reading.device] += int(reading.data.get("missed", 0))


async def one_run(duration_s: float) -> dict[str, float]:
    child = subprocess.Popen(  # noqa: ASYNC220 -- started before any driver runs
        [sys.executable, "-m", "benchmarks.bench_modbus_tcp_peer", "--serve", str(GATES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ports = json.loads(child.stdout.readline())["ports"]
        sink = TallySink()
        pool = BusPool()
        drivers: list[TemperatureGateDriver] = []
        for n, port in enumerate(ports):
            config = TemperatureGateConfig.model_validate(
                {
                    "id": f"temp-gate-{n}",
                    "kind": "temperature_gate",
                    "transport": {"type": "modbus_tcp", "host": "127.0.0.1", "port": port},
                    "poll_interval_ms": POLL_INTERVAL_MS,
                }
            )
            driver = build_driver(config, sink=sink, clock=SystemClock(), buses=pool)
            assert isinstance(driver, TemperatureGateDriver)
            drivers.append(driver)
        tasks = [asyncio.create_task(bus.run(), name=bus.name) for bus in pool.buses]
        tasks += [asyncio.create_task(d.run(), name=d.device_id) for d in drivers]
        try:
            await asyncio.sleep(WARMUP_S)
            polls0 = [d.health.counters.get("polls", 0) for d in drivers]
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(duration_s)
            cpu, elapsed = time.process_time() - cpu0, time.monotonic() - t0
            polls = [
                d.health.counters.get("polls", 0) - p0
                for d, p0 in zip(drivers, polls0, strict=True)
            ]
            failures = sum(d.health.counters.get("poll_failures", 0) for d in drivers)
        finally:
            await stop_tasks(*tasks)
        child.stdin.write("stats\n")
        child.stdin.flush()
        marks = json.loads(child.stdout.readline())["marks"]
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    produced = sum(m["last_counter"] - m["first_counter"] for m in marks)
    accounted = sum(sink.readings.values()) + sum(sink.missed.values())
    return {
        "cpu_pct": 100 * cpu / elapsed,
        "polls": float(sum(polls)),
        "expected": GATES * elapsed * 1000 / POLL_INTERVAL_MS,
        "min_gate_polls": float(min(polls)),
        "failures": float(failures),
        "produced": float(produced),
        "reported": float(sum(sink.readings.values())),
        "missed": float(sum(sink.missed.values())),
        "accounted": float(accounted),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(duration_s: float) -> dict[str, float]:
    """One run in a fresh process, so peak RSS is per run."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_modbus_tcp_peer", "--one", str(duration_s)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.one:
        print(json.dumps(asyncio.run(one_run(args.one))))
        return

    def describe(r: dict[str, float]) -> str:
        return (
            f"CPU {r['cpu_pct']:.2f} % of a core; polls {r['polls']:.0f} of "
            f"{r['expected']:.0f} expected ({100 * r['polls'] / r['expected']:.1f} %, "
            f"slowest gate {r['min_gate_polls']:.0f}), failures {r['failures']:.0f}; readings "
            f"{r['reported']:.0f} reported + {r['missed']:.0f} in gaps = {r['accounted']:.0f} "
            f"of {r['produced']:.0f} made; peak RSS {r['rss_mb']:.1f} MB"
        )

    results = repeat_runs(args.runs, lambda _: run_child(args.duration), describe)
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(
        f"median of {args.runs}: CPU {med['cpu_pct']:.2f} % of a core (target <= 5 %); "
        f"polls {100 * med['polls'] / med['expected']:.1f} % of expected; "
        f"readings accounted {med['accounted']:.0f} of {med['produced']:.0f}; "
        f"peak RSS {med['rss_mb']:.1f} MB (target <= 40 MB)"
    )


if __name__ == "__main__":
    main()
