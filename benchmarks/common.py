"""Shared benchmark plumbing: a daemon process, a pre-filled outbox, /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    The daemon logs ``ts=2026-11-29T08:00:00.123Z level=... msg="..."`` (gateway/logfmt.py).
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


async def wait_until(predicate: Callable[[], bool], timeout: float, *, every: float = 0.02) -> None:
    """Poll ``predicate`` until it holds.

    Raises:
        TimeoutError: it did not hold within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(every)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as the platform side received it; ``at`` is ``time.monotonic()`` then."""

    at: float
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class TimedSubscriber:
    """Like ``tests.subscriber.Subscriber`` (``{root}/#``, persistent 3.1.1 session that
    survives broker restarts), but every message keeps its arrival time."""

    port: int
    root: str
    client_id: str = "bench-platform"
    messages: list[Arrival] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-subscriber")
        async with asyncio.timeout(10):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                    max_queued_incoming_messages=0,
                ) as client:
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.messages.append(
                            Arrival(
                                time.monotonic(), str(message.topic), bytes(payload), message.retain
                            )
                        )
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def on(self, suffix: str) -> list[Arrival]:
        return [m for m in self.messages if m.topic == f"{self.root}/{suffix}"]

    def batches(self) -> list[Arrival]:
        return [m for m in self.messages if m.topic.endswith(("/readings", "/alarms"))]

    def readings(self) -> list[dict[str, Any]]:
        return [r for m in self.batches() for r in m.json()["readings"]]

    def unique_seqs(self) -> list[int]:
        return sorted({int(r["seq"]) for r in self.readings()})

    def online_status_seen(self, since: int = 0) -> bool:
        return any(m.json().get("state") == "online" for m in self.on("status")[since:])
