"""``simulate``: run device simulators standalone, for trying a driver or the daemon by hand.

Each simulator speaks its real protocol on a pseudo-terminal (or loopback TCP
for Modbus TCP); the port paths are printed so that a config can point at
them. Lines typed on standard input script the simulators
(``drivers.sim.script``: ``door-east-1 card 04A1B2C3``, ``help``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from drivers.registry import AnyDeviceConfig, make_simulator
from drivers.sim.script import AnySimulator, ScriptError, apply


async def run_simulators(devices: Sequence[AnyDeviceConfig], *, ambient: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: dict[str, AnySimulator] = {}
    with tempfile.TemporaryDirectory(prefix="estate-gateway-sim-") as tmp:
        try:
            for device in devices:
                workdir = Path(tmp) / device.id
                workdir.mkdir()
                simulator = make_simulator(device, workdir, ambient=ambient)
                endpoint = await simulator.start()
                started[device.id] = cast("AnySimulator", simulator)
                where = endpoint.port or f"{endpoint.host}:{endpoint.tcp_port}"
                print(f"{device.id}\t{device.kind}\t{where}", flush=True)
            scripted = _read_script(started, stop)
            print(
                "simulators running; "
                + ("type 'help' for commands, " if scripted else "")
                + "Ctrl-C stops them",
                flush=True,
            )
            await stop.wait()
        finally:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(sys.stdin.fileno())
            for simulator in reversed(started.values()):
                await simulator.stop()


def _read_script(simulators: dict[str, AnySimulator], stop: asyncio.Event) -> bool:
    """Act on each line of standard input; return False when stdin cannot be watched."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()

    def on_readable() -> None:
        chunk = sys.stdin.buffer.read1(4096) if hasattr(sys.stdin.buffer, "read1") else b""
        if not chunk:  # end of input: keep simulating until a signal
            loop.remove_reader(sys.stdin.fileno())
            return
        buffer.extend(chunk)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            text = line.decode("utf-8", "replace").strip()
            if text in ("quit", "exit"):
                stop.set()
                return
            if not text:
                continue
            try:
                print(apply(simulators, text), flush=True)
            except ScriptError as exc:
                print(f"error: {exc}", flush=True)

    try:
        loop.add_reader(sys.stdin.fileno(), on_readable)
    except (OSError, ValueError):  # a regular file or /dev/null cannot be polled
        return False
    return True
