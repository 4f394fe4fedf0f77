"""SerialTransport and run_serial over a real pty (DESIGN.md "Transports are thin")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from drivers.sim.pty import PtyLink
from drivers.transports.backoff import Backoff
from drivers.transports.config import SerialTransportConfig
from drivers.transports.errors import TransportError
from drivers.transports.serial import SerialTransport, run_serial
from tests.fakes import WAIT_S

pytestmark = pytest.mark.integration


def config(path: Path) -> SerialTransportConfig:
    return SerialTransportConfig(type="serial", port=str(path), baudrate=57600)


async def test_missing_port_raises_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="open failed"):
        await SerialTransport(config(tmp_path / "absent")).open()
    with pytest.raises(TransportError, match="no port"):
        await SerialTransport(SerialTransportConfig(type="serial")).open()


async def test_read_write_and_unplug(tmp_path: Path) -> None:
    link = PtyLink(tmp_path / "tty")
    link.plug()
    try:
        async with SerialTransport(config(link.path)) as transport:
            assert transport.is_open
            assert not transport.low_latency  # a pty has no serial_struct: skipped quietly
            link.write(b"hello")
            async with asyncio.timeout(WAIT_S):
                assert await transport.read() == b"hello"
            await transport.write(b"ping")
            assert link.master_fd is not None
            readable = asyncio.Event()
            asyncio.get_running_loop().add_reader(link.master_fd, readable.set)
            try:
                async with asyncio.timeout(WAIT_S):
                    await readable.wait()
            finally:
                asyncio.get_running_loop().remove_reader(link.master_fd)
            assert os.read(link.master_fd, 100) == b"ping"
            link.unplug()
            with pytest.raises(TransportError, match=r"hangup|failed"):
                async with asyncio.timeout(WAIT_S):
                    await transport.read()
            with pytest.raises(TransportError):
                await transport.write(b"x")
        assert not transport.is_open
        transport.close()  # idempotent
    finally:
        link.unplug()


async def test_run_serial_reopens_and_reports(tmp_path: Path) -> None:
    link = PtyLink(tmp_path / "tty")
    ups: list[str] = []
    downs: list[str] = []
    sessions = 0
    up_event = asyncio.Event()
    down_event = asyncio.Event()

    async def session(transport: SerialTransport) -> None:
        nonlocal sessions
        sessions += 1
        while True:
            await transport.read()

    def on_up(transport: SerialTransport) -> None:
        ups.append(transport.port)
        up_event.set()

    def on_down(reason: str) -> None:
        downs.append(reason)
        down_event.set()

    task = asyncio.create_task(
        run_serial(
            config(link.path),
            session,
            on_up=on_up,
            on_down=on_down,
            backoff=Backoff(initial_s=0.02, cap_s=0.1),
        ),
        name="run-serial",
    )
    try:
        async with asyncio.timeout(WAIT_S):
            await down_event.wait()  # not plugged yet: open fails, reported
            assert "open failed" in downs[0]
            link.plug()
            await up_event.wait()
            down_event.clear()
            up_event.clear()
            link.unplug()
            await down_event.wait()
            link.plug()
            await up_event.wait()
        assert sessions == 2
        assert len(ups) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        link.unplug()
