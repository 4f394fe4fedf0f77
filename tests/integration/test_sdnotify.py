"""gateway.runtime.sdnotify against a real AF_UNIX datagram socket standing in for systemd.

A thread receives on the socket and stamps each datagram with time.monotonic() as it
arrives, so the test sees when pings were really sent, even while the event loop that
sends them is deliberately blocked.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.runtime import sdnotify

pytestmark = pytest.mark.integration

# WatchdogSec equivalent for the tests: 0.2 s, so pings every 0.1 s.
WATCHDOG_USEC = 200_000
PING_PERIOD_S = WATCHDOG_USEC / 1_000_000 / 2
# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer than that.
_SUN_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class Datagram:
    at: float
    text: str


class NotifyReceiver:
    """A stand-in for systemd's notify socket: records every datagram with its time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(address)
        self._sock.settimeout(0.05)
        self._queue: queue.Queue[Datagram] = queue.Queue()
        self.received: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            datagram = Datagram(time.monotonic(), data.decode())
            self.received.append(datagram)
            self._queue.put(datagram)

    def get(self, timeout: float = 5.0) -> Datagram:
        """Block until the next datagram (call it via asyncio.to_thread from async code)."""
        return self._queue.get(timeout=timeout)

    async def next(self) -> Datagram:
        """Wait for the next datagram without blocking the event loop (5 s at most)."""
        return await asyncio.to_thread(self.get)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    path = str(tmp_path / "notify.sock")
    short_dir: str | None = None
    if len(path) > _SUN_PATH_MAX:
        short_dir = tempfile.mkdtemp(prefix="sdn-")
        path = os.path.join(short_dir, "notify.sock")
    recv = NotifyReceiver(path)
    yield recv
    recv.close()
    if short_dir is not None:
        os.unlink(path)
        os.rmdir(short_dir)


def _env(receiver: NotifyReceiver, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": receiver.address, **extra}


def _watchdog_env(receiver: NotifyReceiver) -> dict[str, str]:
    return _env(receiver, WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID=str(os.getpid()))


def _fields(datagram: Datagram) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.text.split("\n"))


# --- one-shot messages --------------------------------------------------------------


def test_ready_status_stopping_reach_the_socket(receiver: NotifyReceiver) -> None:
    env = _env(receiver)
    assert sdnotify.ready(environ=env)
    assert sdnotify.status("backlog 3 routine /\n0 alarm", environ=env)
    assert sdnotify.stopping(environ=env)
    assert [receiver.get().text for _ in range(3)] == [
        "READY=1",
        # A status is one line in `systemctl status`: newlines are folded.
        "STATUS=backlog 3 routine / 0 alarm",
        "STOPPING=1",
    ]


def test_abstract_namespace_socket() -> None:
    name = f"estate-gateway-test-{os.getpid()}-{time.monotonic_ns()}"
    recv = NotifyReceiver("\0" + name)
    try:
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert recv.get().text == "READY=1"
    finally:
        recv.close()


def test_everything_is_a_noop_without_notify_socket() -> None:
    assert not sdnotify.notify("READY=1", environ={})
    assert not sdnotify.ready(environ={})
    assert not sdnotify.status("x", environ={})
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(lambda: "x", environ={}), 1))


def test_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}
    assert not sdnotify.notify("READY=1", environ=env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 30.0),
        # Inherited from a parent process: that watchdog is not ours to feed.
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: str(os.getpid()) if v == "<self>" else v for k, v in env.items()}
    assert sdnotify.watchdog_interval_s(environ=env) == expected


# --- the watchdog loop --------------------------------------------------------------


async def test_watchdog_pings_periodically_with_status(receiver: NotifyReceiver) -> None:
    calls = 0

    def status_fn() -> str:
        nonlocal calls
        calls += 1
        return f"backlog {calls} routine / 0 alarm; devices 4/4 online; broker connected"

    task = asyncio.create_task(
        sdnotify.watchdog_loop(status_fn, environ=_watchdog_env(receiver)), name="watchdog"
    )
    try:
        pings = [await receiver.next() for _ in range(6)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for ping in pings:
        fields = _fields(ping)
        assert fields["WATCHDOG"] == "1"
        assert fields["STATUS"].startswith("backlog ")
        assert fields["STATUS"].endswith("devices 4/4 online; broker connected")
    # Half the watchdog interval apart. Generous bounds: this is a shared 2-core box.
    gaps = [b.at - a.at for a, b in itertools.pairwise(pings)]
    mean_gap = sum(gaps) / len(gaps)
    assert PING_PERIOD_S * 0.8 <= mean_gap <= PING_PERIOD_S * 3, gaps


async def test_blocked_event_loop_stops_the_pings(
    receiver: NotifyReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    block_s = 0.6  # three watchdog timeouts of the test's 0.2 s
    caplog.set_level(logging.WARNING, logger="gateway.runtime.sdnotify")
    task = asyncio.create_task(
        sdnotify.watchdog_loop(None, environ=_watchdog_env(receiver)), name="watchdog"
    )
    try:
        for _ in range(3):  # the loop is up and pinging
            assert (await receiver.next()).text == "WATCHDOG=1"
        blocked_from = time.monotonic()
        time.sleep(block_s)  # noqa: ASYNC251 - blocking the loop is the point of this test
        blocked_until = time.monotonic()
        after = [await receiver.next() for _ in range(3)]  # and it recovers
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    during = [d for d in receiver.received if blocked_from + 0.02 < d.at < blocked_until]
    assert during == [], "pings must stop while the event loop is blocked"
    assert all(d.text == "WATCHDOG=1" for d in after)
    assert after[0].at >= blocked_until
    assert any("Event loop was blocked" in r.getMessage() for r in caplog.records)


async def test_failing_status_callback_does_not_stop_pings(
    receiver: NotifyReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str:
        raise RuntimeError("status is broken")

    task = asyncio.create_task(
        sdnotify.watchdog_loop(broken, environ=_watchdog_env(receiver)), name="watchdog"
    )
    try:
        pings = [await receiver.next() for _ in range(2)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [p.text for p in pings] == ["WATCHDOG=1", "WATCHDOG=1"]
    assert any("Status callback failed" in r.getMessage() for r in caplog.records)


async def test_status_only_without_watchdog(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdnotify, "STATUS_INTERVAL_S", 0.05)
    task = asyncio.create_task(
        sdnotify.watchdog_loop(lambda: "devices 1/1 online", environ=_env(receiver)),
        name="watchdog",
    )
    try:
        messages = [(await receiver.next()).text for _ in range(2)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert messages == ["STATUS=devices 1/1 online"] * 2
