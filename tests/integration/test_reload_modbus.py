"""SIGHUP and Modbus lines, on the real daemon: a line nobody uses is closed, a line
whose devices all change reopens with their new settings, a lone dissenter is refused.

The shared lines are ptys this test makes, with the real Modbus simulator on the
far end (``ModbusSimServer``), so the test can see what the daemon does to the
port: whether it still holds it (``/proc/PID/fd``) and at which baud rate it set
it (the tty's own settings, read through a second descriptor of the pty).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import termios
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from drivers.sim.modbus_server import ModbusSimServer
from drivers.sim.temperature_gate import TemperatureGateDevice
from tests.broker import free_port
from tests.daemon import Daemon, write_config

pytestmark = pytest.mark.integration

NO_BROKER = ["mqtt://127.0.0.1:9"]  # nothing listens: the outbox is what we watch
WAIT_S = 20.0


def gate(device_id: str, port: str | None, *, slave: int = 1, **transport: Any) -> dict[str, Any]:
    """A temperature gate on ``port`` (None: simulated on a pty of its own)."""
    device: dict[str, Any] = {
        "id": device_id,
        "kind": "temperature_gate",
        "transport": {"type": "modbus_rtu", **transport},
        "slave": slave,
        "poll_interval_ms": 100,
    }
    if port is None:
        device["simulate"] = True
    else:
        device["transport"]["port"] = port
    return device


def set_devices(config: Path, devices: list[dict[str, Any]]) -> None:
    raw = yaml.safe_load(config.read_text())
    raw["devices"] = devices
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def held_paths(pid: int) -> set[str]:
    """What the process's file descriptors point at."""
    paths = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            paths.add(os.readlink(fd))
    return paths


def line_speed(path: str) -> int:
    """The baud rate the daemon set on the pty (a termios ``B...`` constant)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return int(termios.tcgetattr(fd)[5])  # ospeed
    finally:
        os.close(fd)


def bus_labels(metrics_port: int) -> set[str]:
    """The ``bus`` labels of the daemon's Modbus metrics, scraped over HTTP."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["bus"]
        for family in text_string_to_metric_families(text)
        if family.name == "estate_gateway_modbus_transactions"
        for sample in family.samples
    }


@contextlib.asynccontextmanager
async def line(path: Path, *slaves: int) -> AsyncIterator[list[TemperatureGateDevice]]:
    """A pty at ``path`` with a simulated gate on each slave id."""
    server = ModbusSimServer(name=f"line {path.name}")
    gates = [TemperatureGateDevice(server, slave=slave) for slave in slaves]
    await server.start_rtu(path)
    try:
        yield gates
    finally:
        await server.stop()


async def polled(gate: TemperatureGateDevice, more: int = 3) -> None:
    """Return once the daemon has read ``gate`` ``more`` more times."""
    reads = gate.reads
    async with asyncio.timeout(WAIT_S):
        await gate.server.wait_until(lambda: gate.reads >= reads + more)


@contextlib.asynccontextmanager
async def daemon_with(config: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(config)
    daemon.start()
    try:
        await daemon.wait_for_log("gateway running")
        yield daemon
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    finally:
        daemon.stop()


async def test_removing_the_last_device_of_a_line_closes_the_line(tmp_path: Path) -> None:
    port = str(tmp_path / "line-a.tty")
    metrics_port = free_port()
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=NO_BROKER,
        devices=[gate("gate-a", port), gate("temp-gate-1", None)],
        metrics={"port": metrics_port},
    )
    async with line(Path(port), 1) as (gate_a,), daemon_with(config) as daemon:
        assert daemon.proc is not None
        pts = os.readlink(port)
        await polled(gate_a)
        await daemon.wait_for_log("metrics endpoint listening")
        assert f"rtu:{port}" in await asyncio.to_thread(bus_labels, metrics_port)
        assert pts in held_paths(daemon.proc.pid)

        set_devices(config, [gate("temp-gate-1", None)])
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log(f"modbus line released: bus=rtu:{port}")

        # The port is closed, the bus is gone from the metrics, nobody polls the line...
        assert pts not in held_paths(daemon.proc.pid)
        buses = await asyncio.to_thread(bus_labels, metrics_port)
        assert f"rtu:{port}" not in buses
        assert len(buses) == 1  # ...and the untouched gate's line is still there.
        # temp-gate-1 still reports; the first wait also lets the simulator take
        # any request that was on the wire when the port closed.
        await daemon.wait_for_commit(after=daemon.last_seq())
        reads = gate_a.reads
        await daemon.wait_for_commit(after=daemon.last_seq())
        assert gate_a.reads == reads
    log = daemon.output()
    assert log.count("modbus line released") == 1
    assert "device stopped: device=temp-gate-1" not in log


async def test_a_lone_device_changes_its_line_settings_without_a_restart(tmp_path: Path) -> None:
    """A simulated gate comes back on the same pty path, so it is the same line."""
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=NO_BROKER,
        devices=[gate("temp-gate-1", None)],
    )
    async with daemon_with(config) as daemon:
        await daemon.wait_for_log("device online: device=temp-gate-1")
        set_devices(config, [gate("temp-gate-1", None, baudrate=19200, timeout_ms=500)])
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("modbus line released: bus=rtu:")
        await daemon.wait_for_log("device started: device=temp-gate-1")
        seq = daemon.last_seq()
        await daemon.wait_for_commit(after=seq)  # its readings flow again
    log = daemon.output()
    assert "device not started" not in log
    assert log.count("simulator started: device=temp-gate-1 ") == 2
    # Released between the stop and the start, never while the device ran.
    stopped = log.index("device stopped: device=temp-gate-1")
    released = log.index("modbus line released")
    assert stopped < released < log.index("device started: device=temp-gate-1")


async def test_a_shared_line_changes_only_when_all_its_devices_do(tmp_path: Path) -> None:
    port = str(tmp_path / "line-b.tty")
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=NO_BROKER,
        devices=[gate("gate-a", port, slave=1), gate("gate-b", port, slave=2)],
    )
    async with line(Path(port), 1, 2) as (gate_a, gate_b), daemon_with(config) as daemon:
        await polled(gate_a)
        await polled(gate_b)
        assert line_speed(port) == termios.B9600

        # One device alone cannot change the line its neighbour keeps using.
        set_devices(
            config, [gate("gate-a", port, slave=1, baudrate=19200), gate("gate-b", port, slave=2)]
        )
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log(
            "config reload: device not started: device=gate-a error=devices on "
            f"rtu:{port} must share one transport configuration; "
            "differing: baudrate (9600 vs 19200)"
        )
        await polled(gate_b)  # the neighbour was never touched
        assert line_speed(port) == termios.B9600
        assert "modbus line released" not in daemon.output()

        # Both together: the line is released and reopened at the new speed.
        both = [gate(g, port, slave=n, baudrate=19200) for n, g in ((1, "gate-a"), (2, "gate-b"))]
        set_devices(config, both)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("config reload: added=gate-a removed=- changed=gate-b")
        await daemon.wait_for_log(f"modbus line released: bus=rtu:{port}")
        await polled(gate_a)
        await polled(gate_b)
        assert line_speed(port) == termios.B19200
    log = daemon.output()
    assert log.count("device not started") == 1
    assert "device started: device=gate-a" in log and "device started: device=gate-b" in log
