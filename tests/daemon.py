"""Run the real daemon as a child process, as systemd would."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from gateway.outbox.store import read_last_seq
from tests.broker import free_port
from tests.fakes import wait_until

REPO = Path(__file__).resolve().parent.parent


def write_config(
    path: Path,
    *,
    brokers: list[str],
    devices: list[dict[str, Any]] | None = None,
    gateway_id: str = "north-gate-1",
    **sections: Any,
) -> Path:
    """A config with trusted clock and short windows; ``sections`` override whole sections.

    Metrics listen on a free port (never the default 9108 a real gateway may hold).
    On the session's shared broker, pass the test's own ``gateway_id``.
    """
    config: dict[str, Any] = {
        "gateway": {"site": "changqing", "id": gateway_id, "data_dir": "data"},
        "mqtt": {"brokers": brokers, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "outbox": {"commit_interval_ms": 200, "sync_interval_ms": 1000},
        "clock": {"source": "trust"},
        "access": {"cards": str(REPO / "access" / "cards.txt")},
        "metrics": {"port": free_port()},
        "devices": devices if devices is not None else simulated_devices(),
    }
    for key, value in sections.items():
        config[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def simulated_devices(temperature_gates: int = 1) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = [
        {
            "id": "door-east-1",
            "kind": "door_node",
            "simulate": True,
            "transport": {"type": "modbus_rtu"},
        },
        {
            "id": "ebike-reader-1",
            "kind": "uhf_reader",
            "simulate": True,
            "transport": {"type": "serial", "baudrate": 57600},
        },
        {
            "id": "band-receiver-1",
            "kind": "ble_receiver",
            "simulate": True,
            "transport": {"type": "serial", "baudrate": 115200},
            "wearers": {"C1A2B3C4D5E6": "wearer-0001", "A4C138000001": "wearer-0002"},
        },
    ]
    for n in range(1, temperature_gates + 1):
        devices.append(
            {
                "id": f"temp-gate-{n}",
                "kind": "temperature_gate",
                "simulate": True,
                "transport": {"type": "modbus_rtu"},
                "poll_interval_ms": 100,
            }
        )
    return devices


def send_command_argv(
    broker_url: str,
    key: Path,
    *,
    device: str,
    params: dict[str, Any],
    gateway_id: str = "north-gate-1",
    action: str = "door.open",
) -> list[str]:
    """``python -m gateway send-command --wait`` for one command, signed with ``key`` (its stem
    is the key id), as an operator would run it."""
    argv = [sys.executable, "-m", "gateway", "send-command", "--broker", broker_url]
    argv += ["--key", str(key), "--key-id", key.stem, "--site", "changqing"]
    argv += ["--gateway", gateway_id, "--action", action, "--device", device]
    for name, value in params.items():
        argv += ["--param", f"{name}={value}"]
    return [*argv, "--wait"]


class Daemon:
    """The daemon as a child process; its log lines land in ``<config>.log`` as they come.

    A pump thread reads the child's output line by line, appends it to the log
    file and wakes whoever waits in ``wait_for_log``: tests wait on the line
    itself, not on a polling interval.
    """

    def __init__(self, config: Path, *, cwd: Path = REPO) -> None:
        self.config = config
        self.cwd = cwd  # the checkout whose code runs (``python -m gateway`` from there)
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._ended = False
        self._pump: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def start(self, *, env: dict[str, str] | None = None) -> None:
        self._lines = []
        self._ended = False
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._pump = threading.Thread(
            target=self._copy_output, args=(self.proc,), name="daemon-log", daemon=True
        )
        self._pump.start()

    def command(self) -> list[str]:
        """The child's command line (central's workers reuse this harness with their own)."""
        return [sys.executable, "-m", "gateway", "run", "-c", str(self.config)]

    def _copy_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.log.open("ab") as log, proc.stdout:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                with self._lock:
                    self._lines.append(raw.decode(errors="replace"))
                self._wake()
        with self._lock:
            self._ended = True  # end of output: the process is gone
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            for loop, event in self._waiters:
                loop.call_soon_threadsafe(event.set)

    def output(self) -> str:
        """Everything the daemon wrote since its last start."""
        with self._lock:
            return "".join(self._lines)

    async def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        """Return once a line containing ``text`` was written since the last start.

        Raises:
            AssertionError: the daemon exited, or ``timeout`` passed, without it.
        """
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                while text not in self.output():
                    if self._ended or self.proc is None:
                        code = self.proc.poll() if self.proc is not None else None
                        raise AssertionError(f"daemon exited {code}:\n{self.output()}")
                    await waiter[1].wait()
                    waiter[1].clear()
        except TimeoutError:
            raise AssertionError(f"no {text!r} in the daemon log:\n{self.output()}") from None
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def _reaped(self) -> None:
        """After the process ended: its last lines are in ``output()``."""
        if self._pump is not None:
            self._pump.join(10)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)
        self._reaped()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._reaped()
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reaped()

    @property
    def database(self) -> Path:
        return self.config.parent / "data" / "outbox.sqlite3"

    def stored_seqs(self) -> set[int]:
        db = sqlite3.connect(self.database)
        try:
            return {
                seq
                for table in ("alarm", "routine")
                for (seq,) in db.execute(f"SELECT seq FROM {table}")
            }
        finally:
            db.close()

    def last_seq(self) -> int:
        db = sqlite3.connect(self.database)
        try:
            return read_last_seq(db)
        finally:
            db.close()

    async def wait_for_commit(self, *, after: int, timeout: float = 15.0) -> int:
        """Wait until the outbox has committed a seq past ``after``; return the last seq.

        Raises:
            AssertionError: none within ``timeout`` seconds (with the daemon's log).
        """
        try:
            await wait_until(lambda: self.last_seq() > after, timeout, every=0.05)
        except TimeoutError:
            raise AssertionError(f"no commit past seq {after}:\n{self.output()}") from None
        return self.last_seq()

    def integrity(self) -> str:
        db = sqlite3.connect(self.database)
        try:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            db.close()
