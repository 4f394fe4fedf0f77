"""Run the real daemon as a child process, as systemd would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.outbox.store import read_last_seq
from tests.broker import free_port

REPO = Path(__file__).resolve().parent.parent


def write_config(
    path: Path, *, brokers: list[str], devices: list[dict[str, Any]] | None = None, **sections: Any
) -> Path:
    """A config with trusted clock and short windows; ``sections`` override whole sections.

    Metrics listen on a free port (never the default 9108 a real gateway may hold).
    """
    config: dict[str, Any] = {
        "gateway": {"site": "changqing", "id": "north-gate-1", "data_dir": "data"},
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


class Daemon:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, *, env: dict[str, str] | None = None) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
                cwd=REPO,
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[self._log_offset :]

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the daemon log:\n{self.output()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

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

    def integrity(self) -> str:
        db = sqlite3.connect(self.database)
        try:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            db.close()
