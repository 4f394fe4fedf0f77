"""The whole daemon at a busy gate's rates: CPU share of one core and peak RSS.

Targets (backbone issue): <= 5 % of one core and <= 60 MB peak RSS for the
daemon with all four device kinds at a busy gate's rates: a card a second, two
bikes a second, two temperature readings a second and 50 BLE ``$GPRP`` lines a
second (most from unknown MACs, the rest from the configured wearers).

The four simulators run in this process with ``ambient=False``, each on its own
pty, driven through their injection APIs; the real daemon process (``python -m
gateway run``) is attached to the ptys (the shipped ``config.yaml`` devices,
``simulate: false`` and the simulator's port) and syncs to a local mosquitto
started here. The shipped config's UHPPOTE controller gets its simulator here
too (UDP on loopback), idle: it is online, not loaded. The CPU figure is the
daemon's alone: ``utime + stime`` of its ``/proc/PID/stat`` over the measured
window (after a warm-up), divided by the window. Peak RSS is its ``VmHWM`` at
the end. Afterwards the load stops, the last e-bike passes close, and the run
checks that nothing was lost: the outbox is empty, every seq from 1 to the
last one arrived at the subscriber, and each injected card, bike and
temperature reading came out as exactly one reading.

    .venv/bin/python -m benchmarks.bench_daemon_load [--seconds 60] [--runs 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from benchmarks.common import (
    bench_parser,
    cpu_seconds,
    median_of,
    proc_status_kb,
    repeat_runs,
    shipped_config,
    temp_dir,
)
from drivers.config.uhppote import UhppoteConfig
from drivers.registry import AnyDeviceConfig, DeviceConfig, attach, make_simulator
from drivers.sim.base import SimEndpoint, Simulator
from drivers.sim.ble_receiver import BleReceiverSimulator
from drivers.sim.door_node import AMBIENT_CARDS, AMBIENT_UNKNOWN_CARD, DoorNodeSimulator
from drivers.sim.temperature_gate import TemperatureGateSimulator
from drivers.sim.uhf_reader import UhfReaderSimulator
from tests.broker import Mosquitto
from tests.daemon import Daemon, write_config
from tests.fakes import wait_until
from tests.subscriber import Subscriber

ROOT = "estates/changqing/gateways/north-gate-1"
TARGET_CPU_PCT = 5.0
TARGET_RSS_MB = 60.0
TICK_S = 0.1
"""The load generator's step: 10 ticks a second."""
CARD_EVERY = 10  # ticks: one card a second
BIKE_EVERY = 5  # two bikes a second
TEMPERATURE_EVERY = 5  # two readings a second
STRANGERS_PER_TICK = 4  # + 1 wearer beacon per tick = 50 lines/s, 80 % unknown MACs
UNKNOWN_CARD_SHARE = 0.15
"""As the door simulator's ambient mode: some swipes are of a card nobody listed."""
BIKE_READS = 6
BIKE_DURATION_S = 0.6
"""A bike is in the reader's field this long, read this many times (a few inventories)."""
WARMUP_S = 5.0
SETTLE_S = 30.0
"""Upper bound for the end: last e-bike passes close (collapse window) and the outbox drains."""


@dataclass
class Injected:
    cards: int = 0
    bikes: int = 0
    temperatures: int = 0
    beacon_lines: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    cpu_pct: float
    rss_mb: float
    window_s: float
    readings: int
    readings_in_window: int
    injected: Injected
    produced: Counter[str]
    lost: list[str]


def backlog(database: Path) -> int:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return sum(
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("alarm", "routine", "result")
        )
    finally:
        db.close()


async def generate(sims: dict[str, Any], injected: Injected, run: int) -> None:
    """Drive the simulators at the busy-gate rates until cancelled (absolute ticks, no drift)."""
    door: DoorNodeSimulator = sims["door_node"]
    uhf: UhfReaderSimulator = sims["uhf_reader"]
    gate: TemperatureGateSimulator = sims["temperature_gate"]
    ble: BleReceiverSimulator = sims["ble_receiver"]
    wearers = sorted(ble.bands)
    rng = random.Random(run)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 0
    while True:
        if tick % CARD_EVERY == 0:
            unknown = rng.random() < UNKNOWN_CARD_SHARE
            door.present_card(AMBIENT_UNKNOWN_CARD if unknown else rng.choice(AMBIENT_CARDS))
            injected.cards += 1
        if tick % BIKE_EVERY == 1:
            # A new EPC for every bike: one ebike.pass each, none collapsed together.
            epc = f"E2801170{run:04X}{injected.bikes:012X}"
            uhf.inject_pass(epc, reads=BIKE_READS, duration_s=BIKE_DURATION_S)
            injected.bikes += 1
        if tick % TEMPERATURE_EVERY == 3:
            gate.inject_reading(round(rng.uniform(36.1, 37.0), 1))
            injected.temperatures += 1
        ble.stranger_beacons(STRANGERS_PER_TICK)
        ble.beacon(wearers[tick % len(wearers)], rssi=rng.randint(-80, -55))
        injected.beacon_lines += STRANGERS_PER_TICK + 1
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * TICK_S - loop.time()))


def device_entries(workdir: Path) -> list[tuple[dict[str, Any], AnyDeviceConfig, Simulator]]:
    """The shipped config's devices, parsed as simulated, each with its simulator (not started).

    The registry knows each kind's config and simulator (the UHPPOTE controller's too).
    """
    parse: TypeAdapter[AnyDeviceConfig] = TypeAdapter(DeviceConfig)
    out = []
    for entry in shipped_config()["devices"]:
        config = parse.validate_python({**entry, "simulate": True})
        out.append((entry, config, make_simulator(config, workdir, ambient=False)))
    return out


def on_endpoint(entry: dict[str, Any], config: AnyDeviceConfig, endpoint: SimEndpoint) -> Any:
    """The daemon's entry for a device whose simulator runs here: not simulated, pointed at it."""
    attached = attach(config, endpoint)
    if isinstance(attached, UhppoteConfig):  # UDP: the controller's address, listen on any port
        where: dict[str, Any] = {"address": attached.address, "listen": attached.listen}
    else:
        where = {"transport": attached.transport.model_dump(mode="json")}
    return {**entry, "simulate": False, **where}


async def one_run(seconds: float, run: int) -> RunResult:
    with temp_dir("bench-load-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        sims: dict[str, Any] = {}
        devices: list[dict[str, Any]] = []
        sub = Subscriber(broker.port, ROOT, client_id="bench-platform")
        daemon: Daemon | None = None
        load: asyncio.Task[None] | None = None
        try:
            for entry, device, sim in device_entries(root / "sim"):
                endpoint = await sim.start()
                sims[entry["kind"]] = sim
                devices.append(on_endpoint(entry, device, endpoint))
            config = write_config(
                root / "gw" / "config.yaml", brokers=[broker.url], devices=devices
            )
            await sub.start()
            daemon = Daemon(config)
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            ids = [d["id"] for d in devices]

            def online(device_ids: list[str]) -> bool:
                seen = {
                    r["device"]
                    for r in sub.readings()
                    if r["type"] == "device.status" and r["data"]["state"] == "online"
                }
                return set(device_ids) <= seen

            polled = [d["id"] for d in devices if d["kind"] != "ble_receiver"]
            await wait_until(lambda: online(polled), 30)
            injected = Injected()
            load = asyncio.create_task(generate(sims, injected, run), name="bench load")
            await wait_until(lambda: online(ids), 30)  # the receiver: once it printed
            await asyncio.sleep(WARMUP_S)
            seq_before = max(sub.unique_seqs(), default=0)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            seq_after = max(sub.unique_seqs(), default=0)
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)

            # The end: the last passes close after the collapse window, then all drains.
            def drained() -> bool:
                assert daemon is not None
                return (
                    backlog(daemon.database) == 0
                    and max(sub.unique_seqs(), default=0) >= daemon.last_seq()
                    and len(produced_counts(sub)["ebike.pass"]) >= injected.bikes
                )

            # A timeout here shows below as lost readings.
            with contextlib.suppress(TimeoutError):
                await wait_until(drained, SETTLE_S, every=0.25)
            rss_mb = proc_status_kb(pid, "VmHWM") / 1024
            lost = check_lost(sub, daemon, injected)
        finally:
            if load is not None and not load.done():
                load.cancel()
            if daemon is not None:
                daemon.stop()
            await sub.stop()
            for sim in sims.values():
                await sim.stop()
            broker.stop()
    produced = Counter({kind: len(v) for kind, v in produced_counts(sub).items()})
    return RunResult(
        cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
        rss_mb=rss_mb,
        window_s=t1 - t0,
        readings=max(sub.unique_seqs(), default=0),
        readings_in_window=seq_after - seq_before,
        injected=injected,
        produced=produced,
        lost=lost,
    )


def produced_counts(sub: Subscriber) -> dict[str, set[str]]:
    """Distinct reading ids per kind of injected event (duplicates are not losses)."""
    out: dict[str, set[str]] = {"card": set(), "ebike.pass": set(), "temperature.body": set()}
    for r in sub.readings():
        if r["type"] == "door.event" and r["data"]["event"] in ("granted", "denied"):
            out["card"].add(r["id"])
        elif r["type"] in out:
            out[r["type"]].add(r["id"])
    return out


def check_lost(sub: Subscriber, daemon: Daemon, injected: Injected) -> list[str]:
    problems = []
    seqs = sub.unique_seqs()
    last = daemon.last_seq()
    if seqs != list(range(1, last + 1)):
        missing = sorted(set(range(1, last + 1)) - set(seqs))
        problems.append(f"seqs not gapless 1..{last}: {len(missing)} missing {missing[:10]}")
    left = backlog(daemon.database)
    if left:
        problems.append(f"outbox not empty: {left} left")
    counts = produced_counts(sub)
    for kind, want in (
        ("card", injected.cards),
        ("ebike.pass", injected.bikes),
        ("temperature.body", injected.temperatures),
    ):
        if len(counts[kind]) != want:
            problems.append(f"{kind}: {len(counts[kind])} readings for {want} injected")
    return problems


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60, help="measured window per run")
    args = parser.parse_args()

    def describe(r: RunResult) -> str:
        inj = r.injected
        return (
            f"CPU {r.cpu_pct:.2f} % of one core over {r.window_s:.1f} s, "
            f"peak RSS {r.rss_mb:.1f} MB; {r.readings_in_window} readings in the window "
            f"({r.readings_in_window / r.window_s:.1f}/s), {r.readings} in the run; "
            f"injected {inj.cards} cards, {inj.bikes} bikes, {inj.temperatures} temperatures, "
            f"{inj.beacon_lines} beacon lines -> {r.produced['card']} card events, "
            f"{r.produced['ebike.pass']} ebike.pass, {r.produced['temperature.body']} "
            f"temperature.body; " + ("nothing lost" if not r.lost else "LOST: " + "; ".join(r.lost))
        )

    results = repeat_runs(args.runs, lambda n: asyncio.run(one_run(args.seconds, n)), describe)
    cpu = median_of(results, lambda r: r.cpu_pct)
    rss = median_of(results, lambda r: r.rss_mb)
    print(
        f"median: CPU {cpu:.2f} % of one core (target <= {TARGET_CPU_PCT:g} % -> "
        f"{cpu / TARGET_CPU_PCT:.2f}x); peak RSS {rss:.1f} MB (target <= {TARGET_RSS_MB:g} MB "
        f"-> {rss / TARGET_RSS_MB:.2f}x); "
        + ("nothing lost in any run" if not any(r.lost for r in results) else "LOSS in some run")
    )
    return 0 if not any(r.lost for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
