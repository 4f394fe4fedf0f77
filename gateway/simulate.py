"""``simulate``: run device simulators standalone, for trying a driver or the daemon by hand.

Each simulator speaks its real protocol on a pseudo-terminal (or loopback TCP
for Modbus TCP); the port paths are printed so that a config can point at them.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from drivers.registry import AnyDeviceConfig, make_simulator
from drivers.sim.base import Simulator


async def run_simulators(devices: Sequence[AnyDeviceConfig], *, ambient: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[tuple[str, Simulator]] = []
    with tempfile.TemporaryDirectory(prefix="estate-gateway-sim-") as tmp:
        try:
            for device in devices:
                workdir = Path(tmp) / device.id
                workdir.mkdir()
                simulator = make_simulator(device, workdir, ambient=ambient)
                endpoint = await simulator.start()
                started.append((device.id, simulator))
                where = endpoint.port or f"{endpoint.host}:{endpoint.tcp_port}"
                print(f"{device.id}\t{device.kind}\t{where}", flush=True)
            print("simulators running; Ctrl-C stops them", flush=True)
            await stop.wait()
        finally:
            for _, simulator in reversed(started):
                await simulator.stop()
