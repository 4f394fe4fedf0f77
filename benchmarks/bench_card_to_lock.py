"""Card-to-lock latency of the door node driver, beyond the poll wait.

A real ``DoorNodeDriver`` on a real ``ModbusBus`` talks RTU over a pty to the
door node simulator. Each swipe presents a known card; the simulator records,
on its own monotonic clock, when the reader answered the driver's read of the
card id (``card_reads``) and when the pulse command reached the relay board
(``pulses``). The figures, per swipe:

- read-to-pulse (the target, p99 <= 10 ms): from the reader serving the
  card-id read (FC03 1002..1011) to the pulse (FC05 0x0200) arriving. This is
  the driver's own latency: reply transit and decoding, the access decision,
  the pulse request at COMMAND priority. The poll phase is not in it.
- flag-to-pulse: from the poll that found "new card" = 1 (FC01 1016) to the
  pulse; PROTOCOLS.md's "card-to-relay within 100 ms of the read" at its
  strictest reading (two transactions: the id read and the pulse).
- raise-to-pulse, for context: from the card being presented to the pulse, so
  it includes waiting for the next poll (0..poll interval).

``--wire-timing`` emulates 9600 8N1 wire time in the simulator (ptys ignore
baud), which shows the figures a real line would add; without it the numbers
are the software path alone. Each swipe follows the previous one's beep by a
random 0..1 poll interval, so the raise falls at random poll phases.

Run from the repository root, on demand (not part of the test gate):

    .venv/bin/python -m benchmarks.bench_card_to_lock [--swipes 200] [--runs 3] [--wire-timing]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_parser, median_of, repeat_runs
from drivers.access_file import FileAccessList
from drivers.access_rules import DoorAccess, WallTime
from drivers.base import SystemClock
from drivers.door_node import DoorNodeConfig, build_driver
from drivers.registry import attach
from drivers.sim.door_node import DoorNodeSimulator
from drivers.transports.bus_pool import BusPool
from tests.devices import stop_tasks
from tests.fakes import CountingSink

CARD = "04A1B2C3"
TARGET_P99_MS = 10.0
"""Software path, read-to-pulse p99 (the issue's target)."""
PROTOCOL_BUDGET_MS = 100.0
"""PROTOCOLS.md: card-to-relay within 100 ms of the read."""
SWIPE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RunResult:
    read_to_pulse_ms: list[float]
    flag_to_pulse_ms: list[float]
    raise_to_pulse_ms: list[float]


def p(values: list[float], q: int) -> float:
    """The q-th percentile (1..99), inclusive method."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def one_run(swipes: int, poll_ms: int, wire_timing: bool, workdir: Path) -> RunResult:
    cards = workdir / "access.cards"
    cards.write_text(f"{CARD}\n", encoding="utf-8")
    config = DoorNodeConfig.model_validate(
        {
            "id": "door-bench",
            "kind": "door_node",
            "simulate": True,
            "transport": {"type": "modbus_rtu"},
            "poll_interval_ms": poll_ms,
        }
    )
    sim = DoorNodeSimulator(config, workdir, ambient=False, wire_timing=wire_timing)
    config = attach(config, await sim.start())
    assert isinstance(config, DoorNodeConfig)
    pool = BusPool()
    access = DoorAccess(FileAccessList(cards), WallTime(SystemClock()), UTC)
    driver = build_driver(
        config, sink=CountingSink(), clock=SystemClock(), buses=pool, access=access
    )
    (bus,) = pool.buses
    loop = asyncio.get_running_loop()
    bus_task = loop.create_task(bus.run(), name="bench bus")
    driver_task = loop.create_task(driver.run(), name="bench door driver")
    node = sim.node
    rng = random.Random(1)
    read_to_pulse: list[float] = []
    flag_to_pulse: list[float] = []
    raise_to_pulse: list[float] = []
    try:
        # The driver must have seen the reader idle once, or the first card is stale.
        async with asyncio.timeout(SWIPE_TIMEOUT_S):
            # Start-up write, "new card" poll, inputs read: a 4th request means
            # the first poll cycle is complete.
            await sim.server.wait_until(lambda: sim.server.received >= 4)
        for _ in range(swipes):
            await asyncio.sleep(rng.uniform(0.0, poll_ms / 1000))
            pulses, beeps = len(node.pulses), len(node.beeps)
            node.present_card(CARD)
            raised = node.card_raised_at
            assert raised is not None

            def swipe_done(pulses: int = pulses, beeps: int = beeps) -> bool:
                # The whole card sequence: pulse, re-arm, beep.
                return len(node.pulses) > pulses and len(node.beeps) > beeps

            async with asyncio.timeout(SWIPE_TIMEOUT_S):
                await node.wait_until(swipe_done)
            pulse_at = node.pulses[pulses].at
            read_at = max(t for t in node.card_reads if t <= pulse_at)
            flag_at = max(t for t in node.flag_reads if t <= read_at)
            read_to_pulse.append((pulse_at - read_at) * 1000)
            flag_to_pulse.append((pulse_at - flag_at) * 1000)
            raise_to_pulse.append((pulse_at - raised) * 1000)
    finally:
        await stop_tasks(driver_task, bus_task)
        await sim.stop()
    return RunResult(read_to_pulse, flag_to_pulse, raise_to_pulse)


def run_all(args: argparse.Namespace) -> int:
    def run_in_temp_dir(_: int) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="bench-door-") as tmp:
            return asyncio.run(one_run(args.swipes, args.poll_ms, args.wire_timing, Path(tmp)))

    def describe(result: RunResult) -> str:
        return (
            f"read-to-pulse p50 {p(result.read_to_pulse_ms, 50):.2f} ms"
            f" p99 {p(result.read_to_pulse_ms, 99):.2f} ms"
            f" | flag-to-pulse p50 {p(result.flag_to_pulse_ms, 50):.2f}"
            f" p99 {p(result.flag_to_pulse_ms, 99):.2f} ms"
            f" | raise-to-pulse p50 {p(result.raise_to_pulse_ms, 50):.1f}"
            f" p99 {p(result.raise_to_pulse_ms, 99):.1f} ms"
        )

    results = repeat_runs(args.runs, run_in_temp_dir, describe)

    def median_p(name: str, q: int) -> float:
        return median_of(results, lambda r: p(getattr(r, name), q))

    mode = "9600 8N1 wire time emulated" if args.wire_timing else "pty, no wire time"
    print(
        f"\n{args.swipes} swipes x {args.runs} runs, poll {args.poll_ms} ms, {mode}; "
        "medians over runs:"
    )
    for name, label in (
        ("read_to_pulse_ms", "read-to-pulse "),
        ("flag_to_pulse_ms", "flag-to-pulse "),
        ("raise_to_pulse_ms", "raise-to-pulse"),
    ):
        print(f"  {label}  p50 {median_p(name, 50):7.2f} ms   p99 {median_p(name, 99):7.2f} ms")
    if args.wire_timing:
        # The software target does not apply on an emulated line; PROTOCOLS.md's does.
        p99 = median_p("flag_to_pulse_ms", 99)
        verdict = "meets" if p99 <= PROTOCOL_BUDGET_MS else "MISSES"
        print(
            f"flag-to-pulse p99 {p99:.2f} ms {verdict} PROTOCOLS.md's "
            f"{PROTOCOL_BUDGET_MS:.0f} ms card-to-relay budget"
        )
    else:
        p99 = median_p("read_to_pulse_ms", 99)
        verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
        print(f"read-to-pulse p99 {p99:.2f} ms {verdict} the {TARGET_P99_MS:.0f} ms target")
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--swipes", type=int, default=200)
    parser.add_argument("--poll-ms", type=int, default=200, help="driver poll interval")
    parser.add_argument(
        "--wire-timing", action="store_true", help="emulate 9600 8N1 wire time in the simulator"
    )
    return run_all(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
