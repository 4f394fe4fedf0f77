"""A simulated door node for a daemon under test, and the operator keys that command it.

The access and command end-to-end tests both run the real daemon against a
door node simulator on a pty and sign with keys made by ``keygen``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from drivers.door_node import DoorNodeConfig
from drivers.sim.door_node import DoorNodeSimulator
from gateway.cli.operator_tools import keygen
from tests.daemon import Daemon
from tests.subscriber import Subscriber


def door_entry(door_id: str, port: str | None = None) -> dict[str, Any]:
    """The door's ``devices[]`` entry, polled every 100 ms; ``port`` once its simulator runs."""
    transport: dict[str, Any] = {"type": "modbus_rtu"}
    if port:
        transport["port"] = port
    return {"id": door_id, "kind": "door_node", "transport": transport, "poll_interval_ms": 100}


async def start_door_sim(workdir: Path, door_id: str) -> tuple[DoorNodeSimulator, dict[str, Any]]:
    """Start a quiet door node simulator; return it and the door's entry on its pty."""
    sim = DoorNodeSimulator(
        DoorNodeConfig.model_validate(door_entry(door_id)), workdir, ambient=False
    )
    endpoint = await sim.start()
    return sim, door_entry(door_id, endpoint.port)


def operator_keys(keys: Path, *key_ids: str) -> dict[str, str]:
    """Make a key pair per id in ``keys``; return ``commands.public_keys`` for them."""
    return dict(keygen(keys, key_id=key_id).split(": ", 1) for key_id in key_ids)


@contextlib.asynccontextmanager
async def running(
    daemon: Daemon,
    sub: Subscriber,
    sim: DoorNodeSimulator,
    *,
    env: dict[str, str] | None = None,
) -> AsyncIterator[None]:
    """Start the subscriber, then the daemon (with ``env`` added to its environment);
    on the way out stop them and the simulator."""
    await sub.start()
    daemon.start(env=env)
    try:
        yield
    finally:
        daemon.stop()
        await sub.stop()
        await sim.stop()
