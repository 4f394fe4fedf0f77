"""The uplink's timing on a driven clock (issue 8, item 6): backoff and the status tick.

The uplink sleeps only on its clock; here a ``SteppedClock`` whose sleeps end
when the test advances it, so the reconnect backoff (growth, cap, cut short by
shutdown) and the status interval are checked in fake seconds, without
waiting them out. The broker, when there is one, is a real mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.transports.backoff import Backoff
from gateway.commands.inbound import InboundCommand
from gateway.config import MqttConfig
from gateway.outbox.store import Outbox
from gateway.runtime.clock import TrustedClockSync
from gateway.uplink.session import Uplink
from tests.broker import SharedBroker, free_port
from tests.fakes import SteppedClock

pytestmark = pytest.mark.integration

SEED = 7


class NoCommands:
    def submit(self, inbound: InboundCommand) -> None:
        raise AssertionError(f"no command expected: {inbound!r}")


@contextlib.asynccontextmanager
async def uplink_on(
    tmp_path: Path, clock: SteppedClock, brokers: list[str], *, gateway_id: str, **mqtt: object
) -> AsyncIterator[tuple[Uplink, asyncio.Task[None]]]:
    outbox = Outbox(
        tmp_path / "data",
        site="changqing",
        gateway_id=gateway_id,
        clock=clock,
        clock_sync=TrustedClockSync(),
        boot_id="b",
    )
    await outbox.open()
    uplink = Uplink(
        MqttConfig.model_validate({"brokers": brokers, **mqtt}),
        site="changqing",
        gateway_id=gateway_id,
        topic_root=f"estates/changqing/gateways/{gateway_id}",
        client_id=f"changqing-{gateway_id}",
        outbox=outbox,
        results=None,
        commands=NoCommands(),
        device_states=dict,
        clock=clock,
        backoff_rng=random.Random(SEED),
    )
    task = asyncio.create_task(uplink.run(), name="uplink-under-test")
    try:
        yield uplink, task
    finally:
        await uplink.shutdown()
        async with asyncio.timeout(10):
            await task
        await outbox.close()


async def test_reconnect_backoff_grows_to_its_cap_and_shutdown_cuts_the_wait(
    tmp_path: Path,
) -> None:
    clock = SteppedClock()
    closed = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: every connect is refused
    async with uplink_on(
        tmp_path,
        clock,
        [closed],
        gateway_id="gate-backoff",
        reconnect_min_s=0.5,
        reconnect_max_s=4,
    ) as (_, task):
        # The same jittered sequence the uplink must draw: ceilings 0.5, 1, 2, 4, 4, ...
        expected = Backoff(initial_s=0.5, cap_s=4, rng=random.Random(SEED))
        ceilings = []
        for attempt in range(8):
            ceilings.append(expected.ceiling())
            delay = await clock.next_sleep(after=attempt)
            assert delay == next(expected)
            assert delay <= ceilings[-1]
            clock.advance(delay)
        assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
        # A ninth wait is pending, and nobody advances the clock: shutdown ends it.
        await clock.next_sleep(after=8)
        assert not task.done()
    assert task.done()
    assert len(clock.sleeps) == 9


async def test_status_is_republished_every_status_interval_of_the_clock(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    clock = SteppedClock()
    platform = shared_broker.subscriber()
    await platform.start()
    status = f"{shared_broker.root}/status"

    def statuses() -> list[str]:
        return [m.json()["state"] for m in platform.messages if m.topic == status]

    try:
        async with uplink_on(
            tmp_path,
            clock,
            [shared_broker.url],
            gateway_id=shared_broker.gateway_id,
            status_interval_s=5,
        ) as _:
            await platform.wait_for(lambda: statuses() == ["online"])
            # The status loop ticks once a clock second: 4 ticks, still one status.
            for _ in range(4):
                await clock.wait_sleeping(1.0)
                clock.advance(1.0)
            await clock.wait_sleeping(1.0)
            assert statuses() == ["online"]
            # The fifth second reaches status_interval_s: published again.
            clock.advance(1.0)
            await platform.wait_for(lambda: statuses() == ["online", "online"])
    finally:
        await platform.stop()
