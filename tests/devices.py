"""A driver run against its simulator, as the supervisor would run it, for one test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from drivers.base import Driver
from drivers.registry import AnyDeviceConfig, attach
from drivers.sim.base import Simulator
from tests.fakes import RecordingSink

ConfigT = TypeVar("ConfigT", bound=AnyDeviceConfig)
DriverT = TypeVar("DriverT", bound=Driver)


@contextlib.asynccontextmanager
async def driven(
    sim: Simulator, config: ConfigT, build: Callable[[ConfigT, RecordingSink], DriverT]
) -> AsyncIterator[tuple[DriverT, RecordingSink]]:
    """Start ``sim``, build the driver on its endpoint with a fresh sink, and run it.

    On the way out the driver task is cancelled and awaited, then the simulator stopped.
    """
    endpoint = await sim.start()
    try:
        attached = attach(config, endpoint)
        assert isinstance(attached, type(config))
        sink = RecordingSink()
        driver = build(attached, sink)
        task = asyncio.create_task(driver.run(), name=f"driver {driver.device_id}")
        try:
            yield driver, sink
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await sim.stop()
