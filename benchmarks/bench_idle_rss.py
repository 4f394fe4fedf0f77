"""The daemon's resident memory when idle, on the shipped config.

Target (issue 8, "Memory"): <= 45 MB RSS. Each run starts the real daemon
(``python -m gateway run``) on the repository's ``config.yaml`` with three
changes that keep it off this machine's own services: ``data_dir`` in a
temporary folder, the broker a mosquitto started here on a free loopback port
(instead of 127.0.0.1:1883), and the metrics endpoint on a free port. Every
device is simulated in the daemon's process, as ``scripts/run`` does. Once the
daemon has logged its broker connection it is left alone for ``--settle``
seconds; the figure is then its ``VmRSS`` (and ``VmHWM``, the peak so far).
The median is over ``--runs`` starts.

``gateway/`` and ``drivers/`` are byte-compiled first, as ``pip install`` does
on a gateway: compiling modules from source at every start (a checkout run
with ``PYTHONDONTWRITEBYTECODE=1``) leaves about 1 MB more behind in the heap.

    .venv/bin/python -m benchmarks.bench_idle_rss [--runs 3] [--settle 5]
"""

from __future__ import annotations

import asyncio
import compileall
import time
from pathlib import Path

import yaml

from benchmarks.common import (
    bench_parser,
    medians,
    proc_status_kb,
    repeat_runs,
    shipped_config,
    temp_dir,
)
from tests.broker import Mosquitto, free_port
from tests.daemon import REPO, Daemon

TARGET_MB = 45.0


def idle_config(workdir: Path, broker_url: str) -> Path:
    """The shipped config, its state, broker and metrics port moved off the machine's own."""
    config = shipped_config()
    config["gateway"]["data_dir"] = str(workdir / "data")
    config["mqtt"]["brokers"] = [broker_url]
    config["metrics"]["port"] = free_port()
    config["access"]["cards"] = str(REPO / config["access"]["cards"])
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one_run(settle_s: float) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one idle daemon, in MB."""
    with temp_dir("bench-idle-rss-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        daemon = Daemon(idle_config(workdir, broker.url))
        try:
            daemon.start()
            asyncio.run(daemon.wait_for_log("mqtt connected", timeout=60))
            time.sleep(settle_s)  # the measured thing is idleness itself: nothing to wait on
            assert daemon.proc is not None
            rss = proc_status_kb(daemon.proc.pid, "VmRSS") / 1024
            hwm = proc_status_kb(daemon.proc.pid, "VmHWM") / 1024
        finally:
            daemon.stop()
            broker.stop()
    return rss, hwm


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before reading")
    parser.add_argument(
        "--no-compile", action="store_true", help="leave the modules uncompiled (as a checkout)"
    )
    args = parser.parse_args()
    if not args.no_compile:
        for package in ("gateway", "drivers"):
            compileall.compile_dir(REPO / package, quiet=1)
    results = repeat_runs(
        args.runs,
        lambda _: one_run(args.settle),
        lambda r: f"idle RSS {r[0]:.1f} MB (peak so far {r[1]:.1f} MB)",
    )
    median, _ = medians(results)
    print(
        f"median idle RSS {median:.1f} MB over {args.runs} starts; "
        f"target <= {TARGET_MB:.0f} MB: {median / TARGET_MB:.2f}x of the target"
    )


if __name__ == "__main__":
    main()
