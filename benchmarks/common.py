"""Shared benchmark plumbing: a daemon process, a pre-filled outbox, /proc readings."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from drivers.base import ReadingType, SystemClock, make_reading
from gateway.clock import TrustedClockSync
from gateway.outbox import Outbox


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


async def prefill(data_dir: Path, readings: int, *, alarm_every: int = 0) -> None:
    """Fill an outbox database with ``readings`` routine readings (and some alarms)."""
    from drivers.base import Priority

    clock = SystemClock()
    outbox = Outbox(
        data_dir,
        site="changqing",
        gateway_id="north-gate-1",
        clock=clock,
        clock_sync=TrustedClockSync(),
        boot_id="bench",
        max_bytes=1 << 34,
    )
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
