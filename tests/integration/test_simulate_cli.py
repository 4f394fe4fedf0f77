"""``python -m gateway simulate``: prints real pty paths and takes commands on stdin."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from tests.daemon import REPO

pytestmark = pytest.mark.integration


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {seen[-300:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen


def test_simulate_prints_ports_and_obeys_script_lines() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "simulate",
            "-c",
            str(REPO / "config.yaml"),
            "--device",
            "band-receiver-1",
            "--quiet",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        out = proc.stdout.fileno()
        banner = read_until(out, b"Ctrl-C").decode()
        device, kind, port = banner.splitlines()[0].split("\t")
        assert (device, kind) == ("band-receiver-1", "ble_receiver")
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        try:
            proc.stdin.write(b"band-receiver-1 sos C1A2B3C4D5E6\nnobody sos x\n")
            proc.stdin.flush()
            line = read_until(fd, b"\r\n").decode()
            assert line.startswith("$GPRP,C1A2B3C4D5E6,")
            assert b"error: no simulated device 'nobody'" in read_until(out, b"nobody")
        finally:
            os.close(fd)
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
