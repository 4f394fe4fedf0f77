"""Simulator histories stay bounded over a long run (``scripts/run`` runs them for months)."""

from __future__ import annotations

import asyncio

import pytest

from drivers.codecs.door_node_map import (
    ACCEPT_BEEP_COIL,
    CARD_ID_REGISTER,
    CARD_ID_REGISTER_COUNT,
    NEW_CARD_COIL,
    PULSE_ADDRESS_BASE,
)
from drivers.sim.door_node import DoorNodeDevice, WriteKind
from drivers.sim.history import DEFAULT_KEEP, History
from drivers.sim.modbus_server import ModbusSimServer, ReadRequest, Table, WriteRequest
from drivers.sim.noise import LineNoise
from drivers.transports.modbus import COIL_OFF, COIL_ON


def test_history_counts_everything_and_keeps_the_newest() -> None:
    h: History[int] = History(keep=3)
    assert not h
    assert len(h) == 0
    for i in range(10):
        h.append(i)
    assert len(h) == 10  # everything ever recorded is counted
    assert h.kept == 3
    assert list(h) == [7, 8, 9]
    assert (h[7], h[9], h[-1], h[-3]) == (7, 9, 9, 7)
    for gone in (0, 6, 10, -4):
        with pytest.raises(IndexError):
            h[gone]


def test_history_seen_then_next_idiom_survives_wraparound() -> None:
    h: History[str] = History(keep=2)
    for i in range(5):
        seen = len(h)
        h.append(f"r{i}")
        assert h[seen] == f"r{i}"


def _fc05(slave: int, address: int, value: int) -> WriteRequest:
    return WriteRequest(slave, 5, Table.COILS, address, (value,))


async def test_door_node_simulator_histories_stay_bounded_over_a_long_run() -> None:
    """Ten times the kept number of swipes, each pulse, read, re-arm and beep recorded."""
    node = DoorNodeDevice(ModbusSimServer())
    board, reader = node.server.slaves[node.relay_slave], node.server.slaves[node.reader_slave]
    swipes = 10 * DEFAULT_KEEP
    try:
        for i in range(swipes):
            node.present_card(f"04A1{i:04X}")
            assert reader.read_hook is not None and board.write_hook is not None
            assert reader.write_hook is not None
            reader.read_hook(ReadRequest(node.reader_slave, 1, Table.COILS, NEW_CARD_COIL, 1))
            reader.read_hook(
                ReadRequest(
                    node.reader_slave,
                    3,
                    Table.HOLDING_REGISTERS,
                    CARD_ID_REGISTER,
                    CARD_ID_REGISTER_COUNT,
                )
            )
            board.write_hook(_fc05(node.relay_slave, PULSE_ADDRESS_BASE, 1 + i % 50))
            reader.write_hook(_fc05(node.reader_slave, NEW_CARD_COIL, COIL_OFF))
            reader.write_hook(_fc05(node.reader_slave, ACCEPT_BEEP_COIL, COIL_ON))
    finally:
        node.cancel_timers()
    for name in ("pulses", "beeps", "card_reads", "flag_reads", "writes"):
        history = getattr(node, name)
        assert history.kept <= DEFAULT_KEEP, name
    assert len(node.pulses) == len(node.beeps) == len(node.card_reads) == swipes
    assert len(node.flag_reads) == swipes
    assert len(node.writes) == 3 * swipes  # pulse, re-arm and beep per swipe
    # The newest records are still there, in order, under their overall index.
    assert node.pulses[swipes - 1].tenths == 1 + (swipes - 1) % 50
    assert [p.tenths for p in node.pulses][-2:] == [1 + (swipes - 2) % 50, 1 + (swipes - 1) % 50]
    assert all(w.kind is WriteKind.READER for w in node.rearms())
    assert len(node.rearms()) <= DEFAULT_KEEP


async def test_door_node_next_pulse_after_the_history_wrapped() -> None:
    node = DoorNodeDevice(ModbusSimServer())
    board = node.server.slaves[node.relay_slave]
    assert board.write_hook is not None
    hook = board.write_hook
    try:
        for _ in range(DEFAULT_KEEP + 5):
            hook(_fc05(node.relay_slave, PULSE_ADDRESS_BASE, 10))
        waiting = asyncio.ensure_future(node.next_pulse())
        await asyncio.sleep(0)  # let it note how many pulses it has seen
        hook(_fc05(node.relay_slave, PULSE_ADDRESS_BASE + 2, 7))
        async with asyncio.timeout(5):
            pulse = await waiting
        assert (pulse.relay, pulse.tenths) == (3, 7)
    finally:
        node.cancel_timers()


async def test_line_noise_keeps_only_the_burst_steps_still_to_come() -> None:
    written = asyncio.Event()
    chunks: list[bytes] = []

    def write(data: bytes) -> None:
        chunks.append(data)
        written.set()

    noise = LineNoise(write)
    try:
        for _ in range(50):
            written.clear()
            noise.burst(0.001)  # one step, due now
            async with asyncio.timeout(5):
                await written.wait()
        noise.burst(0.001)
        assert noise.scheduled_steps == 1, "fired steps of earlier bursts are not kept"
    finally:
        noise.cancel()
    assert len(chunks) == 50
