"""The real daemon under a stand-in for systemd's notify socket: READY=1, WATCHDOG=1, STATUS=."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, write_config

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 1_000_000  # 1 s: the daemon pings every 0.5 s


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    # A short directory: sockaddr_un.sun_path holds 108 bytes, pytest's tmp_path may not fit.
    with tempfile.TemporaryDirectory(prefix="gw-notify-") as folder:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(folder, "notify"))
        sock.settimeout(0.2)
        try:
            yield sock
        finally:
            sock.close()


def receive_until(sock: socket.socket, daemon: Daemon, want: str, got: list[str]) -> None:
    """Collect datagrams into ``got`` until one contains ``want`` (15 s at most)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.output()
            continue
        if want in got[-1]:
            return
    raise AssertionError(f"no {want!r} from the daemon; got {got}\n{daemon.output()}")


async def test_daemon_notifies_ready_watchdog_and_status(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    daemon = Daemon(write_config(tmp_path / "gw" / "config.yaml", brokers=["mqtt://127.0.0.1:9"]))
    daemon.start(
        env={
            "NOTIFY_SOCKET": notify_socket.getsockname(),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "WATCHDOG_PID": "",
        }
    )
    got: list[str] = []
    try:
        await asyncio.to_thread(receive_until, notify_socket, daemon, "READY=1", got)
        ready_at = len(got)
        for _ in range(3):  # periodic pings, each with the status line
            await asyncio.to_thread(receive_until, notify_socket, daemon, "WATCHDOG=1", got)
        daemon.signal(signal.SIGTERM)
        await asyncio.to_thread(receive_until, notify_socket, daemon, "STOPPING=1", got)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    finally:
        daemon.stop()
    pings = [message for message in got if "WATCHDOG=1" in message]
    assert len(pings) >= 3
    assert any(m for m in got[ready_at:] if "WATCHDOG=1" in m)
    for ping in pings:
        [status] = [line for line in ping.splitlines() if line.startswith("STATUS=")]
        assert "backlog" in status and "devices" in status and "broker disconnected" in status
        assert "\n" not in status
