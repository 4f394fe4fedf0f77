"""``status --live`` in a real terminal (a pty) against the running daemon; Ctrl-C exits 0."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.broker import SharedBroker, free_port
from tests.daemon import REPO, Daemon, write_config

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LiveView:
    """``python -m gateway status --live`` with its output on a pty, as in a terminal."""

    def __init__(self, config: Path, interval_s: float = 0.2) -> None:
        master, slave = os.openpty()
        # A terminal of 50 x 160, so rich neither wraps nor crops the view.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        self._master = master
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "gateway", "status", "-c", str(config)),
                "--live",
                "--interval",
                str(interval_s),
            ],
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        os.close(slave)
        self._raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self._raw.decode(errors="replace"))

    def wait_for(self, fact: Callable[[str], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not fact(self.text):
            assert time.monotonic() < deadline, f"not on the screen:\n{self.text[-4000:]}"
            assert self.proc.poll() is None, f"status --live exited:\n{self.text[-4000:]}"
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if ready:
                self._raw += os.read(self._master, 65536)

    def interrupt(self) -> int:
        """Ctrl-C, as the installer leaves; return the exit code."""
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if ready:
                try:
                    self._raw += os.read(self._master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
        return self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._master)


def all_online(screen: str) -> bool:
    rows = [line for line in screen.splitlines() if "│" in line]
    return all(
        any(device in row and " online " in row for row in rows)
        for device in ("door-east-1", "ebike-reader-1", "band-receiver-1", "temp-gate-1")
    )


def test_live_view_shows_devices_broker_and_backlog(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    config = shared_broker.write_config(tmp_path / "gw" / "config.yaml")
    daemon = Daemon(config)
    daemon.start()
    view = LiveView(config)
    try:
        asyncio.run(daemon.wait_for_log("metrics endpoint listening"))
        view.wait_for(lambda s: all_online(s) and "connected" in s and shared_broker.url in s)
        # At least two more refreshes after that: the view updates in place.
        shown = view.text.count("Ctrl-C to quit")
        view.wait_for(lambda s: s.count("Ctrl-C to quit") >= shown + 2)
        assert view.interrupt() == 0
    finally:
        view.close()
        daemon.stop()
    screen = view.text
    assert f"Estate gateway changqing/{shared_broker.gateway_id}" in screen
    assert "daemon running" in screen
    assert "backlog" in screen and "last seq" in screen
    assert "Traceback" not in screen


def test_live_view_says_when_the_daemon_is_not_reachable(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "gw" / "config.yaml", brokers=["mqtt://127.0.0.1:9"], metrics={"port": port}
    )
    view = LiveView(config)
    try:
        view.wait_for(
            lambda s: (
                "daemon: NOT REACHABLE" in s
                and f"not reachable at http://127.0.0.1:{port}/metrics" in s
                and "no outbox database" in s
            )
        )
        assert view.interrupt() == 0
    finally:
        view.close()
    assert "Traceback" not in view.text
