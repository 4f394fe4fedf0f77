"""How close one shared RTU bus gets to its wire limit.

Eight temperature gates (slaves 1..8) on one simulated 9600 8N1 line, with
emulated wire time and a 5 ms device reply delay, each driver polling as fast
as its config allows (20 ms), so the bus queue never runs dry. Prints
transactions/s against:

- the wire limit of a 6-register read: 8-byte request + 17-byte reply + two
  3.5-character silences = 25 x 10 / 9600 s + 7.29 ms = 33.3 ms, i.e. 30.0/s;
- the limit with the device's 5 ms turnaround instead of its 3.65 ms silence:
  34.7 ms, i.e. 28.8/s.

Run from the repository root, on demand (not part of the test gate):

    .venv/bin/python -m benchmarks.bench_bus_efficiency [--duration 10] [--runs 3]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_parser, median_of, repeat_runs
from drivers.base import SystemClock
from drivers.sim.modbus_server import LineTiming, ModbusSimServer
from drivers.sim.temperature_gate import TemperatureGateDevice
from drivers.temperature_gate import TemperatureGateConfig, build_driver
from drivers.transports.bus_pool import BusPool
from tests.devices import stop_tasks
from tests.fakes import CountingSink

GATES = 8
BAUD = 9600
REPLY_DELAY_S = 0.005
REQUEST_BYTES = 8
REPLY_BYTES = 5 + 2 * 6
WARMUP_S = 1.0


def limits() -> tuple[float, float]:
    line = LineTiming(BAUD, "N", 1)
    wire_s = (REQUEST_BYTES + REPLY_BYTES) * line.char_s
    wire_limit = 1 / (wire_s + 2 * line.gap_s)
    device_limit = 1 / (wire_s + line.gap_s + max(REPLY_DELAY_S, line.gap_s))
    return wire_limit, device_limit


async def one_run(duration_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        server = ModbusSimServer(
            name="bench line",
            line=LineTiming(BAUD, "N", 1),
            wire_timing=True,
            reply_delay_s=REPLY_DELAY_S,
        )
        gates = [TemperatureGateDevice(server, slave=n) for n in range(1, GATES + 1)]
        path = await server.start_rtu(Path(workdir) / "line.tty")
        pool = BusPool()
        sink = CountingSink()
        configs = [
            TemperatureGateConfig.model_validate(
                {
                    "id": f"temp-gate-{n}",
                    "kind": "temperature_gate",
                    "transport": {"type": "modbus_rtu", "port": path, "baudrate": BAUD},
                    "slave": n,
                    "poll_interval_ms": 20,
                }
            )
            for n in range(1, GATES + 1)
        ]
        drivers = [build_driver(c, sink=sink, clock=SystemClock(), buses=pool) for c in configs]
        [bus] = pool.buses
        tasks = [asyncio.create_task(bus.run(), name="bench bus")]
        tasks += [asyncio.create_task(d.run(), name=d.device_id) for d in drivers]
        try:
            await asyncio.sleep(WARMUP_S)
            answered0, cpu0, t0 = server.answered, time.process_time(), time.monotonic()
            reads0 = [gate.reads for gate in gates]
            await asyncio.sleep(duration_s)
            elapsed = time.monotonic() - t0
            answered = server.answered - answered0
            cpu = time.process_time() - cpu0
            per_gate = [gate.reads - before for gate, before in zip(gates, reads0, strict=True)]
        finally:
            await stop_tasks(*tasks)
            await server.stop()
    return {
        "tps": answered / elapsed,
        "timeouts": float(bus.stats.timeouts),
        "fairness": min(per_gate) / max(per_gate),
        "cpu_pct": 100 * cpu / elapsed,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    args = parser.parse_args()
    wire_limit, device_limit = limits()

    def describe(result: dict[str, float]) -> str:
        return (
            f"{result['tps']:.2f} transactions/s = "
            f"{100 * result['tps'] / wire_limit:.1f} % of the wire limit, "
            f"{100 * result['tps'] / device_limit:.1f} % with the 5 ms reply delay; "
            f"timeouts {result['timeouts']:.0f}, fairness min/max {result['fairness']:.2f}, "
            f"CPU {result['cpu_pct']:.1f} % (gateway and simulator together)"
        )

    results = repeat_runs(args.runs, lambda _: asyncio.run(one_run(args.duration)), describe)
    tps = median_of(results, lambda r: r["tps"])
    print(
        f"median of {args.runs}: {tps:.2f} transactions/s; wire limit {wire_limit:.2f}/s "
        f"({1000 / wire_limit:.1f} ms per transaction): {100 * tps / wire_limit:.1f} %; "
        f"with the reply delay {device_limit:.2f}/s: {100 * tps / device_limit:.1f} % "
        f"(target >= 90 % of the wire limit)"
    )


if __name__ == "__main__":
    main()
