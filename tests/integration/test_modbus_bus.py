"""ModbusBus against the simulator: a real pty (RTU) or a loopback socket (TCP).

Every wait is for a fact (a request the simulator saw, a future, the bus's
connected event) inside ``asyncio.timeout``; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.codecs.door_node_map import pulse_address
from drivers.sim.modbus_server import ModbusSimServer, Table, WriteOutcome, WriteRequest
from drivers.transports.bus_pool import BusPool
from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from drivers.transports.errors import TransportError, TransportTimeoutError
from drivers.transports.modbus import BusPriority, ModbusBus, ModbusExceptionError
from tests.fakes import WAIT_S

pytestmark = pytest.mark.integration

BUS_OPTIONS = {
    "reconnect_initial_s": 0.05,
    "reconnect_max_s": 0.2,
    "slave_backoff_after": 3,
    "slave_silent_s": 0.5,
    "slave_probe_initial_s": 0.1,
    "slave_probe_max_s": 0.4,
}


@dataclass
class Line:
    server: ModbusSimServer
    bus: ModbusBus
    pulses: list[WriteRequest]


def populate(server: ModbusSimServer, pulses: list[WriteRequest]) -> None:
    for slave in (1, 2):
        store = server.add_slave(slave)
        store.set(Table.HOLDING_REGISTERS, 0, [367 + slave, 373, 0, 0, 0, slave])
        store.set(Table.HOLDING_REGISTERS, 0x0010, [373, 0])
        store.set(Table.INPUT_REGISTERS, 0, [10 * slave, 20 * slave])
        store.set(Table.COILS, 0, [False] * 8)
        store.set(Table.DISCRETE_INPUTS, 0, [True, False, True])

        def hook(request: WriteRequest) -> WriteOutcome:
            if request.function_code == 5 and request.address >= 0x0200:
                pulses.append(request)
                return WriteOutcome.ACCEPT
            return WriteOutcome.STORE

        store.write_hook = hook


@contextlib.asynccontextmanager
async def open_line(
    tmp_path: Path, kind: str, *, timeout_ms: int = 150, retries: int = 1
) -> AsyncIterator[Line]:
    server = ModbusSimServer()
    pulses: list[WriteRequest] = []
    populate(server, pulses)
    config: ModbusRtuTransportConfig | ModbusTcpTransportConfig
    if kind == "rtu":
        path = await server.start_rtu(tmp_path / "bus.tty")
        config = ModbusRtuTransportConfig(
            type="modbus_rtu", port=path, timeout_ms=timeout_ms, retries=retries
        )
    else:
        port = await server.start_tcp()
        config = ModbusTcpTransportConfig(
            type="modbus_tcp", host="127.0.0.1", port=port, timeout_ms=timeout_ms, retries=retries
        )
    bus = BusPool(**BUS_OPTIONS).get(config)
    task = asyncio.create_task(bus.run(), name="test bus")
    try:
        async with asyncio.timeout(WAIT_S):
            await bus.wait_connected()
        yield Line(server, bus, pulses)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop()


@pytest.fixture(params=["rtu", "tcp"])
async def line(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Line]:
    async with open_line(tmp_path, request.param) as opened:
        yield opened


@pytest.fixture
async def rtu(tmp_path: Path) -> AsyncIterator[Line]:
    async with open_line(tmp_path, "rtu") as opened:
        yield opened


async def test_reads_and_writes_round_trip(line: Line) -> None:
    bus = line.bus
    async with asyncio.timeout(WAIT_S):
        assert await bus.read_holding_registers(1, 0, 6) == [368, 373, 0, 0, 0, 1]
        assert await bus.read_holding_registers(2, 0, 2) == [369, 373]
        assert await bus.read_input_registers(2, 0, 2) == [20, 40]
        assert await bus.read_discrete_inputs(1, 0, 3) == [True, False, True]
        await bus.write_coil(1, 3, True)
        assert await bus.read_coils(1, 0, 8) == [False, False, False, True] + [False] * 4
        await bus.write_register(1, 0x0010, 380)
        assert await bus.read_holding_registers(1, 0x0010, 1) == [380]
    assert bus.connected


async def test_coil_value_write_sends_its_value_and_checks_the_echo(line: Line) -> None:
    async with asyncio.timeout(WAIT_S):
        await line.bus.write_coil_value(1, pulse_address(1), 7)
        await line.bus.write_coil_value(2, pulse_address(3), 30)
    assert [(p.slave, p.address, p.values) for p in line.pulses] == [
        (1, 0x0200, (7,)),
        (2, 0x0202, (30,)),
    ]
    # Accepted without storing: the relay coils are untouched.
    assert line.server.slaves[1].get(Table.COILS, 0, 8) == [0] * 8


async def test_exception_response_carries_its_code(line: Line) -> None:
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(ModbusExceptionError) as caught:
            await line.bus.read_holding_registers(1, 0x0100, 2)
        with pytest.raises(TransportError) as write_error:
            await line.bus.write_coil(1, 0x0100, True)
    assert caught.value.exception_code == 0x02
    assert caught.value.function_code == 0x03
    assert isinstance(write_error.value, ModbusExceptionError)
    assert (write_error.value.function_code, write_error.value.exception_code) == (0x05, 0x02)
    assert line.bus.stats.exceptions == 2
    # The slave answered: an exception is not a failure of the line.
    assert not line.bus.backing_off(1)


async def test_command_waits_for_at_most_one_in_flight_transaction(rtu: Line) -> None:
    server, bus = rtu.server, rtu.bus
    server.reply_delay_s = 0.03  # keep the polls queued while the command arrives
    polls = [
        asyncio.create_task(bus.read_holding_registers(1, 0, 6), name=f"poll {n}") for n in range(8)
    ]
    async with asyncio.timeout(WAIT_S):
        await server.wait_until(lambda: server.received >= 2)
        seen_before = server.received
        await bus.write_coil_value(1, pulse_address(1), 7, priority=BusPriority.COMMAND)
        await asyncio.gather(*polls)
    order = [seen.function_code for seen in server.requests]
    command_at = order.index(5)
    assert len(order) == 9
    # Between the command's submission and its arrival, at most the one
    # transaction the bus had already taken went out.
    assert command_at - seen_before <= 1
    assert order[command_at + 1 :].count(3) >= 1  # polls were still waiting behind it


async def test_a_command_goes_between_a_poll_and_its_retry(rtu: Line) -> None:
    server, bus = rtu.server, rtu.bus
    server.silence(2)
    poll = asyncio.create_task(bus.read_holding_registers(2, 0, 2), name="silent poll")
    async with asyncio.timeout(WAIT_S):
        await server.wait_until(lambda: server.received >= 1)
        await bus.write_coil(1, 0, True, priority=BusPriority.COMMAND)
        with pytest.raises(TransportTimeoutError):
            await poll
    assert [(seen.slave, seen.function_code) for seen in server.requests] == [
        (2, 3),  # first attempt, unanswered
        (1, 5),  # the command, before the retry
        (2, 3),  # the retry
    ]


async def test_cancelled_caller_does_not_confuse_the_bus(rtu: Line) -> None:
    server, bus = rtu.server, rtu.bus
    server.reply_delay_s = 0.05
    in_flight = asyncio.create_task(bus.read_holding_registers(1, 0, 2), name="in flight")
    queued = asyncio.create_task(bus.read_input_registers(1, 0, 2), name="queued")
    async with asyncio.timeout(WAIT_S):
        await server.wait_until(lambda: server.received >= 1)
        in_flight.cancel()
        queued.cancel()
        for task in (in_flight, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        # The next caller gets its own answer, not the abandoned one's.
        assert await bus.read_holding_registers(2, 0, 6) == [369, 373, 0, 0, 0, 2]
    # The queued request was withdrawn before it reached the wire.
    assert [seen.function_code for seen in server.requests] == [3, 3]


async def test_silent_slave_is_rationed_while_others_are_served(rtu: Line) -> None:
    server, bus = rtu.server, rtu.bus
    server.silence(2)
    errors: list[str] = []
    started = time.monotonic()
    async with asyncio.timeout(WAIT_S):
        while not bus.backing_off(2):
            with pytest.raises(TransportTimeoutError) as caught:
                await bus.read_holding_registers(2, 0, 2)
            errors.append(caught.value.reason)
            # The healthy slave on the same line keeps answering meanwhile.
            assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
        # Rationed only after three unanswered requests *and* slave_silent_s of silence.
        assert len(errors) >= 3
        assert time.monotonic() - started >= BUS_OPTIONS["slave_silent_s"]
        on_wire = server.requests_to(2)
        with pytest.raises(TransportError, match="backing off"):
            await bus.read_holding_registers(2, 0, 2)
        assert server.requests_to(2) == on_wire  # failed fast, not sent
        # A command always goes to the wire.
        with pytest.raises(TransportTimeoutError):
            await bus.write_coil(2, 0, True, priority=BusPriority.COMMAND)
        assert server.requests_to(2) > on_wire
        server.silence(2, False)
        while True:  # polls fail fast until a probe gets through
            try:
                assert await bus.read_holding_registers(2, 0, 2) == [369, 373]
                break
            except TransportError:
                await asyncio.sleep(0.05)  # poll again, as a driver would
    assert not bus.backing_off(2)


async def test_garbage_and_bad_crc_are_recovered_by_a_retry(line: Line) -> None:
    server, bus = line.server, line.bus
    async with asyncio.timeout(WAIT_S):
        server.inject_garbage(b"\x55\xaa\x01")  # noise on an idle line
        assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
        server.prefix_next_reply(b"\x00\xff\x13")
        assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
        server.corrupt_next_replies(1)
        assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
    assert bus.stats.retries >= 2


@pytest.mark.parametrize("kind", ["rtu", "tcp"])
async def test_a_garbled_reply_is_retried_at_once_not_after_the_timeout(
    tmp_path: Path, kind: str
) -> None:
    # A 2 s timeout: a retry that waited for it would take 2 s; one that goes
    # once the line is quiet after the broken reply takes a few ms.
    async with open_line(tmp_path, kind, timeout_ms=2000, retries=0) as opened:
        server, bus = opened.server, opened.bus
        server.corrupt_next_replies(3)
        started = time.monotonic()
        async with asyncio.timeout(WAIT_S):
            assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
        assert time.monotonic() - started < 1.0
        assert (bus.stats.bad_replies, bus.stats.timeouts) == (3, 0)


async def test_garbled_replies_within_the_budget_then_fail(tmp_path: Path) -> None:
    # Noise for longer than the request's budget (timeout x (retries + 1)):
    # the request fails, but a slave that keeps answering, however garbled,
    # is never rationed.
    async with open_line(tmp_path, "rtu", timeout_ms=100, retries=1) as opened:
        server, bus = opened.server, opened.bus
        server.noise_burst(1.5)
        async with asyncio.timeout(WAIT_S):
            for _ in range(4):
                with pytest.raises(TransportTimeoutError, match="garbled"):
                    await bus.read_holding_registers(2, 0, 2)
        assert bus.stats.bad_replies >= 4
        assert not bus.backing_off(2)


async def test_unplug_fails_requests_then_replug_reconnects(line: Line) -> None:
    server, bus = line.server, line.bus
    async with asyncio.timeout(WAIT_S):
        assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
        server.unplug()
        while True:
            try:
                await bus.read_holding_registers(1, 0, 2)
            except TransportTimeoutError:
                continue  # the exchange that was on the wire when it went
            except TransportError:
                break
        assert not bus.connected
        server.replug()
        await bus.wait_connected()
        assert await bus.read_holding_registers(1, 0, 2) == [368, 373]
    assert bus.stats.connects == 2


async def test_stopping_the_bus_fails_waiting_callers(tmp_path: Path) -> None:
    server = ModbusSimServer()
    populate(server, [])
    server.silence(1)
    path = await server.start_rtu(tmp_path / "bus.tty")
    bus = ModbusBus(
        ModbusRtuTransportConfig(type="modbus_rtu", port=path, timeout_ms=2000), name="stopping"
    )
    runner = asyncio.create_task(bus.run(), name="stopping bus")
    try:
        async with asyncio.timeout(WAIT_S):
            await bus.wait_connected()
            waiting = [
                asyncio.create_task(bus.read_coils(1, 0, 1), name=f"waiting {n}") for n in range(3)
            ]
            await server.wait_until(lambda: server.received >= 1)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, TransportError) for result in results)
        assert not bus.connected
    finally:
        await server.stop()
