"""Running drivers (and their buses) against simulators, for tests and benchmarks."""

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
            await stop_tasks(task)
    finally:
        await sim.stop()


async def stop_tasks(*tasks: asyncio.Task[None]) -> None:
    """Cancel the tasks and wait for each, cancelling again where a cancellation was lost.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus's ``execute``)
    drops a cancellation that arrives as the reply does; a bus task then goes
    back to waiting for work. A second ``cancel()`` reaches it there.
    """
    for task in tasks:
        for _ in range(50):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=0.2)
            if done:
                break
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
