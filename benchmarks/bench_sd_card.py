"""SD-card friendliness at a steady 50 readings/s: syncs per second and bytes written.

Targets (backbone issue): <= 1.2 fsync/fdatasync calls per second, and bytes
written to storage (``write_bytes`` of ``/proc/PID/io``) <= 3x the readings'
own encoded size. The real outbox and uplink run under ``strace -f``,
draining to a local mosquitto as they would at a gate with a healthy link.

    .venv/bin/python -m benchmarks.bench_sd_card [--seconds 60] [--rate 50] [--runs 3]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import bench_parser, medians, proc_io, repeat_runs, temp_dir
from tests.broker import Mosquitto

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs")


def count_syncs(trace: str, start: float, end: float) -> int:
    """Sync calls that started within [start, end] (``strace -f -ttt`` lines)."""
    total = 0
    for line in trace.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[2].startswith(SYNC_CALLS):
            continue
        if start <= float(parts[1]) <= end:
            total += 1
    return total


def child_pid(parent: int) -> int:
    for _ in range(200):
        out = subprocess.run(
            ["pgrep", "-P", str(parent)], capture_output=True, text=True, check=False
        )
        if out.stdout.strip():
            return int(out.stdout.split()[0])
        time.sleep(0.05)
    raise RuntimeError("no child under strace")


def one_run(seconds: float, rate: float) -> tuple[float, float, float]:
    with temp_dir("bench-sd-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        summary = root / "strace.txt"
        try:
            proc = subprocess.Popen(
                [
                    "strace",
                    "-f",
                    "-ttt",
                    "-o",
                    str(summary),
                    "-e",
                    "trace=" + ",".join(SYNC_CALLS),
                    sys.executable,
                    "-m",
                    "benchmarks.sd_load",
                    str(root / "data"),
                    broker.url,
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            pid = child_pid(proc.pid)
            assert proc.stdout.readline().startswith("READY")
            io_start = proc_io(pid)["write_bytes"]
            started = time.time()
            done = proc.stdout.readline().split()
            ended = time.time()
            io_end = proc_io(pid)["write_bytes"]
            sent = proc.stdout.readline().split()
            proc.wait(60)
        finally:
            broker.stop()
        readings, encoded = int(done[1]), int(sent[1])
        # Only the steady window counts: start-up and shutdown are one-offs.
        syncs = count_syncs(summary.read_text(), started, ended)
    return syncs / (ended - started), (io_end - io_start) / encoded, readings / seconds


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is needed: apt-get install strace")
    results = repeat_runs(
        args.runs,
        lambda _: one_run(args.seconds, args.rate),
        lambda r: f"{r[2]:.1f} readings/s, {r[0]:.2f} syncs/s, written/encoded {r[1]:.2f}x",
    )
    syncs, ratio, _ = medians(results)
    print(
        f"median: {syncs:.2f} syncs/s (target <= 1.2), bytes written {ratio:.2f}x the "
        f"readings' encoded size (target <= 3x)"
    )


if __name__ == "__main__":
    main()
