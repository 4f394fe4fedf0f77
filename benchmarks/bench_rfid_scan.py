"""Benchmark: UHF reader scan mode at 57600 baud, pushes as fast as the wire allows.

The simulated reader runs in a child process with wire-time emulation (each
byte takes 10 bits / 57600 s, PROTOCOLS.md: ptys ignore baud) and, once the
driver has put it in scan mode, pushes ``0xEE`` frames back to back for a
rotating set of EPCs. The driver runs in this process with a counting sink.
Measured over a fixed window after a warm-up:

- tag pushes decoded per second by the driver, against the wire limit
  ``57600 / (frame bytes x 10)`` (320 frames/s for a 12-byte EPC);
- CPU seconds this (driver) process spent, and the share of one core.

Run from the repository root (never part of the test gate)::

    .venv/bin/python benchmarks/bench_rfid_scan.py [--runs 3] [--seconds 5]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import bench_parser, median_of, repeat_runs
from drivers.base import SystemClock
from drivers.codecs.chafon_uhf import TagPushed
from drivers.sim.uhf_reader import UhfReaderSimulator
from drivers.uhf_reader import UhfReaderConfig, UhfReaderDriver
from tests.fakes import CountingSink

BAUD = 57600
N_TAGS = 50
EPCS = [bytes.fromhex(f"E200001722110088152{n:05X}") for n in range(N_TAGS)]
FRAME_BYTES = len(TagPushed(EPCS[0]).encode())
WIRE_LIMIT_FPS = BAUD / (FRAME_BYTES * 10)


def _config(port: str | None = None) -> UhfReaderConfig:
    settings: dict[str, object] = {
        "id": "uhf-bench",
        "kind": "uhf_reader",
        "simulate": True,
        "mode": "scan",
    }
    config = UhfReaderConfig.model_validate(settings)
    if port is not None:
        config = config.model_copy(
            update={"transport": config.transport.model_copy(update={"port": port})}
        )
    return config


async def serve_sim(workdir: Path, duration_s: float) -> None:
    """Child process: the simulated reader, flooding once in scan mode."""
    sim = UhfReaderSimulator(_config(), workdir, ambient=False, wire_time=True)
    endpoint = await sim.start()
    print(endpoint.port, flush=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    flooding = False
    try:
        while loop.time() < end:
            if not flooding and sim.mode.is_scan:
                sim.start_flood(EPCS)
                flooding = True
            await asyncio.sleep(0.01)
    finally:
        cpu = time.process_time()
        await sim.stop()
    print(json.dumps({"frames_sent": sim.frames_sent, "sim_cpu_s": cpu}), flush=True)


async def one_run(warmup_s: float, measure_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-sim",
            tmp,
            str(warmup_s + measure_s + 3),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(30):
                port = (await child.stdout.readline()).decode().strip()
            sink = CountingSink()
            driver = UhfReaderDriver(_config(port), sink=sink, clock=SystemClock())
            task = asyncio.create_task(driver.run(), name="uhf-bench-driver")
            try:
                await asyncio.sleep(warmup_s)
                reads0 = driver.health.counters.get("tag_reads", 0)
                cpu0, t0 = time.process_time(), time.perf_counter()
                await asyncio.sleep(measure_s)
                reads1 = driver.health.counters.get("tag_reads", 0)
                cpu1, t1 = time.process_time(), time.perf_counter()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            async with asyncio.timeout(30):
                stats = json.loads((await child.stdout.readline()) or b"{}")
                await child.wait()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    wall = t1 - t0
    return {
        "fps": (reads1 - reads0) / wall,
        "cpu_s": cpu1 - cpu0,
        "cpu_share": (cpu1 - cpu0) / wall,
        "discarded": float(driver.health.counters.get("frames_discarded", 0)),
        "sim_frames": float(stats.get("frames_sent", 0)),
        "wall_s": wall,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--serve-sim", nargs=2, metavar=("WORKDIR", "SECONDS"))
    args = parser.parse_args()
    if args.serve_sim:
        asyncio.run(serve_sim(Path(args.serve_sim[0]), float(args.serve_sim[1])))
        return
    print(
        f"scan mode, {BAUD} baud 8N1, {FRAME_BYTES}-byte push frames, {N_TAGS} EPCs; "
        f"wire limit {WIRE_LIMIT_FPS:.1f} frames/s"
    )

    def describe(r: dict[str, float]) -> str:
        return (
            f"{r['fps']:.1f} frames/s "
            f"({100 * r['fps'] / WIRE_LIMIT_FPS:.1f}% of wire), "
            f"driver CPU {r['cpu_s']:.3f} s over {r['wall_s']:.2f} s "
            f"({100 * r['cpu_share']:.1f}% of a core), discarded {r['discarded']:.0f}"
        )

    results = repeat_runs(
        args.runs, lambda _: asyncio.run(one_run(args.warmup, args.seconds)), describe
    )
    fps = median_of(results, lambda r: r["fps"])
    cpu = median_of(results, lambda r: r["cpu_s"])
    share = median_of(results, lambda r: r["cpu_share"])
    per_frame_us = 1e6 * share / fps if fps else float("nan")
    print(
        f"median of {args.runs}: {fps:.1f} frames/s = {100 * fps / WIRE_LIMIT_FPS:.1f}% of the "
        f"{WIRE_LIMIT_FPS:.1f} frames/s wire limit; driver CPU {cpu:.3f} s per "
        f"{args.seconds:.0f} s window ({100 * share:.1f}% of one core, "
        f"~{per_frame_us:.0f} us per frame)"
    )


if __name__ == "__main__":
    main()
