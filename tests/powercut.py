"""Power cuts under load: the daemon's data directory on a filesystem that forgets.

The data directory is a ``tests.powercut_fs`` mount: only what was synced
survives an unmount. One cut is SIGKILL of the daemon, then the unmount (the
power goes, the page cache with it). Some rounds also kill the daemon without
a cut first (a crash whose page cache survives), so that a restarted daemon
finds committed rows that were never synced.

After each cut the databases are read straight from the backing directory,
which is then what a disk would hold, and checked against what the broker
delivered to a platform-side subscriber (CONTRACT 1.1, "a reading is
published only once it is durable"):

- every reading the broker saw is still in the outbox with the same content,
  or it was acknowledged (its row deleted, its seq not above the last seq the
  outbox has recorded): a seq never goes back, so it is never given again;
- no ``id`` ever names two different readings;
- both databases pass ``PRAGMA integrity_check``.

Used by tests/integration/test_power_cut.py (a few cuts) and
benchmarks/bench_power_cut.py (many).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from drivers.sim.uhf_reader import UhfReaderSimulator
from drivers.uhf_reader import UhfReaderConfig
from gateway.outbox.store import read_last_seq
from gateway.timefmt import parse_rfc3339
from tests.broker import Mosquitto
from tests.daemon import REPO, Daemon, simulated_devices, write_config
from tests.subscriber import Subscriber

ROOT = "estates/changqing/gateways/north-gate-1"
DATABASES = ("outbox.sqlite3", "commands.sqlite3")


class PowerCutMount:
    """One ``tests.powercut_fs`` process at a time over ``backing``, mounted at ``mountpoint``."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.proc: subprocess.Popen[str] | None = None
        self.cuts: list[dict[str, int]] = []
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)

    def mount(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut_fs", str(self.backing), str(self.mountpoint)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"powercut_fs did not mount (exit {self.proc.returncode})")
            time.sleep(0.02)

    def cut(self) -> dict[str, int]:
        """Unmount: everything not synced is gone. Returns the filesystem's summary."""
        assert self.proc is not None
        subprocess.run(["fusermount", "-u", str(self.mountpoint)], check=True)
        out, _ = self.proc.communicate(timeout=30)
        self.proc = None
        summary: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        self.cuts.append(summary)
        return summary

    def close(self) -> None:
        if self.proc is not None:
            subprocess.run(["fusermount", "-u", "-z", str(self.mountpoint)], check=False)
            self.proc.wait(10)
            self.proc = None


@dataclass
class PowerCutReport:
    cuts: int = 0
    kills_without_cut: int = 0
    readings_seen: int = 0  # distinct ids the broker delivered
    messages_seen: int = 0  # readings delivered, repeats included
    last_seq: int = 0
    dropped_bytes: int = 0  # unsynced bytes the cuts threw away
    duplicates: list[str] = field(default_factory=list)  # ids naming two different readings
    lost: list[str] = field(default_factory=list)  # seen, then neither kept nor acknowledged
    changed: list[str] = field(default_factory=list)  # seen, kept, but with other content
    integrity: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"cuts={self.cuts} kills_without_cut={self.kills_without_cut} "
            f"readings_seen={self.readings_seen} messages_seen={self.messages_seen} "
            f"last_seq={self.last_seq} dropped_bytes={self.dropped_bytes} "
            f"duplicate_ids={len(self.duplicates)} lost={len(self.lost)} "
            f"changed={len(self.changed)} integrity_failures={len(self.integrity)}"
        )

    @property
    def problems(self) -> list[str]:
        return [
            *(f"id {i} names two different readings" for i in self.duplicates),
            *(f"reading {i} seen by the broker was lost by a cut" for i in self.lost),
            *(f"reading {i} seen by the broker is stored with other content" for i in self.changed),
            *self.integrity,
        ]


def _content(reading: dict[str, Any]) -> tuple[int, str, str, str]:
    ts_ms = round(parse_rfc3339(reading["ts"]) * 1000)
    data = json.dumps(reading["data"], sort_keys=True)
    return ts_ms, reading["device"], reading["type"], data


def _stored(database: Path) -> tuple[str, int, dict[int, tuple[int, str, str, str]]]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        rows = {
            seq: (ts, device, type_, json.dumps(json.loads(data), sort_keys=True))
            for table in ("alarm", "routine")
            for seq, ts, device, type_, data in db.execute(
                f"SELECT seq, ts, device, type, data FROM {table}"
            )
        }
        return str(epoch), read_last_seq(db), rows
    finally:
        db.close()


def _integrity(backing: Path) -> list[str]:
    problems = []
    for name in DATABASES:
        path = backing / name
        if not path.exists():
            continue
        db = sqlite3.connect(path)
        try:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
        if verdict != "ok":
            problems.append(f"{name}: integrity_check says {verdict}")
    return problems


async def _settle(sub: Subscriber, port: int, n: int) -> None:
    """Wait until the broker has delivered what it got before now (a marker after it)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"powercut-marker-{n}") as client:
        await client.publish(f"{ROOT}/test-marker", str(n).encode(), qos=1)
    await sub.wait_for(
        lambda: any(m.payload == str(n).encode() for m in sub.on("test-marker")), timeout=20
    )


def _check_after_cut(report: PowerCutReport, sub: Subscriber, backing: Path) -> None:
    report.integrity += _integrity(backing)
    epoch, last_seq, rows = _stored(backing / "outbox.sqlite3")
    report.last_seq = last_seq
    for reading in sub.readings():
        _gateway, reading_epoch, seq_text = reading["id"].split(":")
        if reading_epoch != epoch:
            report.lost.append(reading["id"])  # a new epoch: the whole buffer was lost
            continue
        seq = int(seq_text)
        if seq in rows:
            if rows[seq] != _content(reading) and reading["id"] not in report.changed:
                report.changed.append(reading["id"])
        elif seq > last_seq and reading["id"] not in report.lost:
            report.lost.append(reading["id"])


def _find_duplicates(report: PowerCutReport, sub: Subscriber) -> None:
    seen: dict[str, set[tuple[int, str, str, str]]] = defaultdict(set)
    readings = sub.readings()
    for reading in readings:
        seen[reading["id"]].add(_content(reading))
    report.duplicates = sorted(i for i, contents in seen.items() if len(contents) > 1)
    report.readings_seen = len(seen)
    report.messages_seen = len(readings)


def _wait_drained(database: Path, upto: int, timeout: float) -> None:
    """Poll the outbox (through the mount) until no reading up to ``upto`` waits in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            waiting = sum(
                db.execute(f"SELECT count(*) FROM {t} WHERE seq <= ?", (upto,)).fetchone()[0]
                for t in ("alarm", "routine")
            )
        finally:
            db.close()
        if waiting == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the outbox did not drain in {timeout} s")


async def run_power_cuts(
    workdir: Path,
    broker: Mosquitto,
    *,
    cuts: int,
    seed: int,
    bikes_per_s: float = 100.0,
    load_s: tuple[float, float] = (0.6, 2.0),
) -> PowerCutReport:
    """Cut the power ``cuts`` times under load; return what the checks found.

    The load: a UHF reader simulator in this process, on a pty that outlives
    the daemon, sees ``bikes_per_s`` new bikes a second (one routine
    ``ebike.pass`` each); the daemon's own simulated door, wristband receiver
    and temperature gates add their ambient readings and alarms.
    """
    rng = random.Random(seed)
    report = PowerCutReport()
    backing = workdir / "backing"
    fs = PowerCutMount(backing, workdir / "gw" / "data")
    entry: dict[str, Any] = {
        "id": "ebike-reader-1",
        "kind": "uhf_reader",
        "transport": {"type": "serial", "baudrate": 57600},
        "poll_interval_ms": 50,
        "collapse_window_s": 0.2,
    }
    (workdir / "sim").mkdir(parents=True, exist_ok=True)
    uhf = UhfReaderSimulator(
        UhfReaderConfig.model_validate({**entry, "simulate": True}),
        workdir / "sim",
        ambient=False,
        seed=seed,
    )
    endpoint = await uhf.start()
    devices = [d for d in simulated_devices(temperature_gates=2) if d["kind"] != "uhf_reader"]
    devices.append({**entry, "transport": {**entry["transport"], "port": endpoint.port}})
    config = write_config(workdir / "gw" / "config.yaml", brokers=[broker.url], devices=devices)
    daemon = Daemon(config)
    sub = Subscriber(broker.port, ROOT)
    await sub.start()

    async def bikes() -> None:
        n = 0
        while True:
            uhf.inject_pass(f"E2801170{seed % 65536:04X}{n:012X}", reads=1, duration_s=0.01)
            n += 1
            await asyncio.sleep(1 / bikes_per_s)

    load = asyncio.create_task(bikes(), name="powercut-bikes")
    try:
        for cycle in range(cuts):
            fs.mount()
            daemon.start()
            await daemon.wait_for_log("gateway running", 30)
            if cycle % 3 == 1:
                # A crash without a cut first: the page cache keeps what the
                # next process finds committed but never synced.
                await asyncio.sleep(rng.uniform(*load_s))
                daemon.kill()
                report.kills_without_cut += 1
                daemon.start()
                await daemon.wait_for_log("gateway running", 30)
            await asyncio.sleep(rng.uniform(*load_s))
            daemon.kill()
            report.dropped_bytes += fs.cut()["dropped_bytes"]
            report.cuts += 1
            await _settle(sub, broker.port, cycle)
            _check_after_cut(report, sub, backing)
        # Power back for good, the load stopped: everything left drains (so a
        # seq given again would reach the broker twice), then a clean stop.
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        fs.mount()
        daemon.start()
        await daemon.wait_for_log("gateway running", 30)
        await asyncio.to_thread(_wait_drained, daemon.database, report.last_seq, 60)
        daemon.signal(signal.SIGTERM)
        await asyncio.to_thread(daemon.wait, 15)
        fs.cut()
        await _settle(sub, broker.port, cuts)
        _check_after_cut(report, sub, backing)
    finally:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        daemon.stop()
        fs.close()
        await sub.stop()
        await uhf.stop()
    _find_duplicates(report, sub)
    return report
