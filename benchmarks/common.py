"""Shared benchmark plumbing: a daemon process, a pre-filled outbox, /proc readings."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from drivers.base import Clock, ReadingType, SystemClock, make_reading
from gateway.outbox.store import Outbox
from gateway.runtime.clock import TrustedClockSync
from tests.outboxes import site_outbox

_Result = TypeVar("_Result")


def bench_parser(doc: str | None, *, runs: int = 3) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first paragraph and ``--runs``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=runs, help="repetitions; medians are printed")
    return parser


def repeat_runs(
    runs: int, one_run: Callable[[int], _Result], describe: Callable[[_Result], str]
) -> list[_Result]:
    """Call ``one_run(n)`` for n = 1..runs, printing ``run n: <describe(result)>`` after each."""
    results: list[_Result] = []
    for n in range(1, runs + 1):
        result = one_run(n)
        results.append(result)
        print(f"run {n}: {describe(result)}", flush=True)
    return results


def median_of(results: Iterable[_Result], key: Callable[[_Result], float]) -> float:
    """The median over runs of one figure of each run."""
    return statistics.median(key(result) for result in results)


def medians(results: Iterable[tuple[float, ...]]) -> list[float]:
    """For runs that return a tuple of figures: the median of each figure, in order."""
    return [statistics.median(figure) for figure in zip(*results, strict=True)]


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (VmHWM: peak RSS, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_io(pid: int) -> dict[str, int]:
    pairs = (line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def bench_outbox(data_dir: Path, clock: Clock, *, max_bytes: int | None = 1 << 34) -> Outbox:
    """The real outbox as the benchmarks run it: trusted clock, no size cap to speak of.

    ``max_bytes=None`` keeps the outbox's own default cap.
    """
    cap = {} if max_bytes is None else {"max_bytes": max_bytes}
    return site_outbox(data_dir, clock, clock_sync=TrustedClockSync(), boot_id="bench", **cap)


def backlog(database: Path) -> int:
    """Readings waiting in an outbox database (read-only, while the daemon runs)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return sum(
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("alarm", "routine")
        )
    finally:
        db.close()


async def prefill(data_dir: Path, readings: int, *, alarm_every: int = 0) -> None:
    """Fill an outbox database with ``readings`` routine readings (and some alarms)."""
    from drivers.base import Priority

    clock = SystemClock()
    outbox = bench_outbox(data_dir, clock)
    await outbox.open()
    data = {"celsius": 36.6, "threshold": 37.3, "fever": False}
    for n in range(readings):
        if alarm_every and n % alarm_every == 0:
            outbox.put(
                make_reading(
                    clock,
                    "temp-gate-1",
                    ReadingType.TEMPERATURE_BODY,
                    {"celsius": 38.2, "threshold": 37.3, "fever": True},
                    Priority.ALARM,
                )
            )
        else:
            outbox.put(make_reading(clock, "temp-gate-1", ReadingType.TEMPERATURE_BODY, data))
        if n % 50_000 == 49_999:
            await outbox.commit()
    await outbox.close()


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- helpers for the whole-daemon benchmarks (load, door latency, reconnect) ---------


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99), inclusive method (as bench_card_to_lock)."""
    import statistics

    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def shipped_config() -> dict[str, Any]:
    """The repository's shipped ``config.yaml``, parsed (the defaults a gate runs with)."""
    import yaml

    repo = Path(__file__).resolve().parent.parent
    loaded: dict[str, Any] = yaml.safe_load((repo / "config.yaml").read_text())
    return loaded


def log_lines(text: str, needle: str) -> list[tuple[float, str]]:
    """Daemon log lines containing ``needle``: (wall time from ``ts=``, message).

    The daemon logs ``ts=2026-11-29T08:00:00.123Z level=... msg="..."`` (gateway/runtime/logfmt.py).
    """
    import calendar
    import re

    pattern = re.compile(r'^ts=(\S+?)\.(\d{3})Z .*?msg="(.*)"$')
    out: list[tuple[float, str]] = []
    for line in text.splitlines():
        if needle not in line:
            continue
        match = pattern.match(line)
        if match is None:
            continue
        whole = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
        out.append((whole + int(match.group(2)) / 1000, match.group(3)))
    return out
