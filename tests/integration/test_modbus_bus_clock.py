"""The Modbus bus's timing on a driven clock (issue 8, item 6): backoff, frame gap, probes.

The bus sleeps and reads deadlines only through its ``Timer``; here a
``SteppedClock`` whose sleeps end when the test advances it. The line is the
real simulator on a pty (or a port that does not exist); only the exchange's
own reply timeout stays on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.sim.modbus_server import ModbusSimServer, Table
from drivers.transports.backoff import Backoff
from drivers.transports.config import ModbusRtuTransportConfig
from drivers.transports.errors import TransportError
from drivers.transports.modbus import ModbusBus, frame_gap_s
from tests.fakes import WAIT_S, SteppedClock

pytestmark = pytest.mark.integration

SEED = 11


@contextlib.asynccontextmanager
async def running(bus: ModbusBus) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(bus.run(), name="bus-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reopen_backoff_grows_to_its_cap_in_clock_seconds(tmp_path: Path) -> None:
    clock = SteppedClock()
    config = ModbusRtuTransportConfig(type="modbus_rtu", port=str(tmp_path / "unplugged.tty"))
    bus = ModbusBus(
        config,
        name="rtu:test",
        reconnect_initial_s=0.25,
        reconnect_max_s=2.0,
        timer=clock,
        backoff_rng=random.Random(SEED),
    )
    expected = Backoff(initial_s=0.25, cap_s=2.0, rng=random.Random(SEED))
    async with running(bus):
        ceilings = []
        for attempt in range(7):
            ceilings.append(expected.ceiling())
            delay = await clock.next_sleep(after=attempt)
            assert delay == next(expected)
            clock.advance(delay)
        # A request while the port is missing fails at once, not after a timeout.
        async with asyncio.timeout(WAIT_S):
            await clock.next_sleep(after=7)
            with pytest.raises(TransportError):
                await bus.read_holding_registers(1, 0, 1)
    assert ceilings == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert not bus.connected


@contextlib.asynccontextmanager
async def sim_line(tmp_path: Path, clock: SteppedClock) -> AsyncIterator[ModbusBus]:
    server = ModbusSimServer()
    store = server.add_slave(1)
    store.set(Table.HOLDING_REGISTERS, 0, [368, 373])
    path = await server.start_rtu(tmp_path / "bus.tty")
    config = ModbusRtuTransportConfig(type="modbus_rtu", port=path, baudrate=9600)
    bus = ModbusBus(
        config,
        name="rtu:sim",
        slave_backoff_after=2,
        slave_silent_s=1.0,
        slave_probe_initial_s=4.0,
        slave_probe_max_s=8.0,
        timer=clock,
    )
    try:
        async with running(bus):
            async with asyncio.timeout(WAIT_S):
                await bus.wait_connected()
            yield bus
    finally:
        await server.stop()


async def test_the_frame_gap_is_kept_on_the_clock_from_the_last_byte_heard(
    tmp_path: Path,
) -> None:
    clock = SteppedClock()
    async with sim_line(tmp_path, clock) as bus:
        gap = frame_gap_s(bus.config)
        assert gap == pytest.approx(3.5 * 10 / 9600)
        async with asyncio.timeout(WAIT_S):
            assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
            # The reply was heard at this clock instant: the next request waits
            # the whole gap, and no less, before it goes on the wire.
            second = asyncio.ensure_future(bus.read_holding_registers(1, 0, 1))
            await clock.wait_sleeping(gap)
            clock.advance(gap / 2)
            await asyncio.sleep(0.05)  # real time: the request must still be held
            assert not second.done()
            assert bus.stats.transactions == 1
            clock.advance(gap / 2)
            assert await second == [368]
        assert bus.stats.transactions == 2


async def test_a_silent_slave_is_probed_once_per_interval_of_the_clock(tmp_path: Path) -> None:
    clock = SteppedClock()
    async with sim_line(tmp_path, clock) as bus:
        async with asyncio.timeout(WAIT_S * 3):
            # Slave 9 is not on the line: each poll costs its real reply timeout.
            for _ in range(2):
                with pytest.raises(TransportError):
                    await bus.read_holding_registers(9, 0, 1)
            assert not bus.backing_off(9)  # silent for 0 clock seconds: a glitch so far
            clock.advance(1.0)  # silent for slave_silent_s now
            with pytest.raises(TransportError):
                await bus.read_holding_registers(9, 0, 1)
            assert bus.backing_off(9)
            timeouts = bus.stats.timeouts
            # Until the probe interval has passed on the clock, polls fail fast...
            clock.advance(3.9)
            with pytest.raises(TransportError, match="backing off"):
                await bus.read_holding_registers(9, 0, 1)
            assert bus.stats.timeouts == timeouts
            # ...then one poll goes out as a probe (and times out on the wire).
            clock.advance(0.1)
            with pytest.raises(TransportError):
                await bus.read_holding_registers(9, 0, 1)
            assert bus.stats.timeouts > timeouts
            # Healthy slaves were never held back.
            assert await bus.read_holding_registers(1, 0, 1) == [368]
