"""Simulated door node (``door-node-v1``) on ``ModbusSimServer``.

Two slaves on one line, as PROTOCOLS.md describes the node: a relay/input
board (default slave 1) and a card reader (default slave 2).

- Relay board: relays 1..8 on coils 0x0000..0x0007; the pulse command, FC05
  to 0x0200+n with the duration in tenths of a second as the value, switches
  relay n+1 on and the board itself switches it off when the time is up (a
  new pulse restarts the time; a plain coil write cancels it); discrete inputs
  0x0000 door contact and 0x0001 exit button (eight inputs, 0x0000..0x0007).
- Card reader: coil 1016 "new card waiting" (the driver writes 0 to re-arm),
  the card id in holding registers 1002..1011, beeps on coils 1014 / 1015
  (write 1: the reader beeps and keeps the coil at 0).

Scriptable from tests: ``present_card``, ``open_door`` / ``close_door``,
``press_exit`` / ``release_exit``, ``stop_answering`` / ``resume_answering``,
``unplug`` / ``replug``. Every pulse, coil write and beep is recorded with the
monotonic time it reached the simulated node (``pulses``, ``writes``,
``beeps``), and so is every read of the card id (``card_reads``) and every
poll that found a card waiting (``flag_reads``): the card-to-lock benchmark
measures between those and the pulses. Each is a ``History``: all counted, the
latest 1,000 kept. ``wait_until`` and ``next_pulse`` wait for a fact, not for time.

Ambient mode (the shipped configuration): every few seconds a resident swipes
a known card from ``access/cards.txt``; when the lock is released they open the
door and close it a moment later. Now and then an unknown card is swiped: it
is denied and nobody goes through.

Longer than 400 lines because it models both slaves of one register map (the relay board
with its self-timed pulses, the card reader) with the history that tests and the card-
to-lock benchmark measure against, and the ambient residents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Unpack

from pymodbus.constants import ExcCodes

from drivers.codecs.door_node_map import (
    ACCEPT_BEEP_COIL,
    CARD_ID_REGISTER,
    CARD_ID_REGISTER_COUNT,
    DOOR_CONTACT_INPUT,
    EXIT_BUTTON_INPUT,
    NEW_CARD_COIL,
    PULSE_ADDRESS_BASE,
    PULSE_UNIT_MS,
    REJECT_BEEP_COIL,
    RELAY_COIL_BASE,
    RELAY_COUNT,
    encode_card_id,
)
from drivers.sim.config import DoorNodeSimConfig
from drivers.sim.history import History
from drivers.sim.modbus_line import LineOptions, ModbusLineSimulator
from drivers.sim.modbus_server import (
    ModbusSimServer,
    ReadRequest,
    Table,
    WriteOutcome,
    WriteRequest,
)
from drivers.transports.modbus import COIL_OFF, COIL_ON

BOARD_INPUT_COUNT = 8

AMBIENT_CARDS = ("04A1B2C3", "04A1B2C5", "E2801160600002054A3B")
"""Listed in the shipped ``access/cards.txt`` for every door."""
AMBIENT_UNKNOWN_CARD = "04DEAD00BEEF"
"""Not listed anywhere: always denied."""
AMBIENT_PERIOD_S = 4.0
"""A swipe about every 4 s in ambient mode (jittered +-40 %)."""
AMBIENT_UNKNOWN_SHARE = 0.15
"""Share of swipes with the unknown card."""
AMBIENT_EXIT_SHARE = 0.3
"""Share of entries followed by someone leaving through the exit button."""
AMBIENT_WAIT_FOR_LOCK_S = 2.0
"""How long a resident waits at the door for the lock to release."""
AMBIENT_OPEN_S = (1.0, 3.0)
"""How long the door stays open while someone walks through."""
EXIT_PRESS_S = 0.5


class WriteKind(StrEnum):
    PULSE = "pulse"
    """FC05 to 0x0200+n on the relay board."""
    RELAY = "relay"
    """FC05 to a relay coil (held on / off)."""
    READER = "reader"
    """FC05 to a reader coil (re-arm, beeps)."""


@dataclass(frozen=True, slots=True)
class NodeWrite:
    """One FC05 as the node received it; ``at`` is ``time.monotonic()`` then."""

    at: float
    kind: WriteKind
    slave: int
    address: int
    value: int


@dataclass(frozen=True, slots=True)
class Pulse:
    at: float
    relay: int
    tenths: int


@dataclass(frozen=True, slots=True)
class BeepRecord:
    at: float
    accept: bool


class DoorNodeDevice:
    """The relay board and the card reader of one door, on a ``ModbusSimServer``."""

    def __init__(
        self,
        server: ModbusSimServer,
        *,
        relay_slave: int = 1,
        reader_slave: int = 2,
    ) -> None:
        self.server = server
        self.relay_slave = relay_slave
        self.reader_slave = reader_slave
        # Bounded (``drivers.sim.history``): ``scripts/run`` keeps a simulator up for months.
        self.writes: History[NodeWrite] = History()
        self.pulses: History[Pulse] = History()
        self.beeps: History[BeepRecord] = History()
        self.card_reads: History[float] = History()
        """Monotonic times of the reads of the card id registers."""
        self.flag_reads: History[float] = History()
        """Monotonic times of the reads of coil 1016 that answered "new card" (1)."""
        self.card_raised_at: float | None = None
        """Monotonic time of the last ``present_card``."""
        self._changed = asyncio.Event()
        self._relay_timers: dict[int, asyncio.TimerHandle] = {}

        self._board = server.add_slave(relay_slave)
        self._board.set(Table.COILS, RELAY_COIL_BASE, [0] * RELAY_COUNT)
        self._board.set(Table.DISCRETE_INPUTS, 0, [0] * BOARD_INPUT_COUNT)
        self._board.write_hook = self._on_board_write

        self._reader = server.add_slave(reader_slave)
        self._reader.set(Table.COILS, ACCEPT_BEEP_COIL, [0, 0, 0])  # 1014, 1015, 1016
        self._reader.set(Table.HOLDING_REGISTERS, CARD_ID_REGISTER, [0] * CARD_ID_REGISTER_COUNT)
        self._reader.write_hook = self._on_reader_write
        self._reader.read_hook = self._on_reader_read

    # ------------------------------------------------------------- the script

    def present_card(self, card: str) -> None:
        """A card is held to the reader: its id in the registers, "new card" raised."""
        self._reader.set(Table.HOLDING_REGISTERS, CARD_ID_REGISTER, encode_card_id(card))
        self._reader.set(Table.COILS, NEW_CARD_COIL, [1])
        self.card_raised_at = time.monotonic()
        self._notify()

    @property
    def card_waiting(self) -> bool:
        """Whether the reader still flags a card (the driver has not re-armed it)."""
        return self._reader.get(Table.COILS, NEW_CARD_COIL) == [1]

    def open_door(self) -> None:
        self._board.set(Table.DISCRETE_INPUTS, DOOR_CONTACT_INPUT, [1])

    def close_door(self) -> None:
        self._board.set(Table.DISCRETE_INPUTS, DOOR_CONTACT_INPUT, [0])

    def press_exit(self) -> None:
        self._board.set(Table.DISCRETE_INPUTS, EXIT_BUTTON_INPUT, [1])

    def release_exit(self) -> None:
        self._board.set(Table.DISCRETE_INPUTS, EXIT_BUTTON_INPUT, [0])

    @property
    def door_open(self) -> bool:
        return self._board.get(Table.DISCRETE_INPUTS, DOOR_CONTACT_INPUT) == [1]

    def relay_on(self, relay: int) -> bool:
        """Whether relay ``relay`` (1-based) is on now (pulsed or held)."""
        return self._board.get(Table.COILS, RELAY_COIL_BASE + relay - 1) == [1]

    def stop_answering(self) -> None:
        """Both slaves hear requests but no longer answer."""
        self.server.silence(self.relay_slave, True)
        self.server.silence(self.reader_slave, True)

    def resume_answering(self) -> None:
        self.server.silence(self.relay_slave, False)
        self.server.silence(self.reader_slave, False)

    # -------------------------------------------------------------- waiting

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking after every recorded write or read.

        Wrap in ``asyncio.timeout``: this waits for a fact, for as long as it takes.
        """
        while not predicate():
            await self._changed.wait()

    async def next_pulse(self) -> Pulse:
        """The first pulse after this call (wrap in ``asyncio.timeout``)."""
        seen = len(self.pulses)
        await self.wait_until(lambda: len(self.pulses) > seen)
        return self.pulses[seen]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- hooks

    def _on_board_write(self, request: WriteRequest) -> WriteOutcome | int:
        now = time.monotonic()
        if request.function_code != 5:
            return WriteOutcome.STORE
        (value,) = request.values
        address = request.address
        if PULSE_ADDRESS_BASE <= address < PULSE_ADDRESS_BASE + RELAY_COUNT:
            relay = address - PULSE_ADDRESS_BASE + 1
            if value == 0:
                return int(ExcCodes.ILLEGAL_VALUE)  # a pulse of no length
            self.writes.append(NodeWrite(now, WriteKind.PULSE, request.slave, address, value))
            self.pulses.append(Pulse(now, relay, value))
            self._switch(relay, on=True, off_after_s=value * PULSE_UNIT_MS / 1000)
            self._notify()
            return WriteOutcome.ACCEPT
        if RELAY_COIL_BASE <= address < RELAY_COIL_BASE + RELAY_COUNT:
            self.writes.append(NodeWrite(now, WriteKind.RELAY, request.slave, address, value))
            self._switch(address - RELAY_COIL_BASE + 1, on=value == COIL_ON)
            self._notify()
            # The coil write stores through (FF00 / 0000 checked by the server).
            return WriteOutcome.STORE
        return WriteOutcome.STORE

    def _switch(self, relay: int, *, on: bool, off_after_s: float | None = None) -> None:
        timer = self._relay_timers.pop(relay, None)
        if timer is not None:
            timer.cancel()
        self._board.set(Table.COILS, RELAY_COIL_BASE + relay - 1, [on])
        if on and off_after_s is not None:
            self._relay_timers[relay] = asyncio.get_running_loop().call_later(
                off_after_s, self._pulse_over, relay
            )

    def _pulse_over(self, relay: int) -> None:
        self._relay_timers.pop(relay, None)
        self._board.set(Table.COILS, RELAY_COIL_BASE + relay - 1, [0])

    def _on_reader_write(self, request: WriteRequest) -> WriteOutcome | int:
        now = time.monotonic()
        if request.function_code != 5:
            return WriteOutcome.STORE
        (value,) = request.values
        self.writes.append(NodeWrite(now, WriteKind.READER, request.slave, request.address, value))
        outcome = WriteOutcome.STORE
        if request.address in (ACCEPT_BEEP_COIL, REJECT_BEEP_COIL) and value == COIL_ON:
            self.beeps.append(BeepRecord(now, accept=request.address == ACCEPT_BEEP_COIL))
            outcome = WriteOutcome.ACCEPT  # beeps, and the coil stays 0
        self._notify()
        return outcome

    def _on_reader_read(self, request: ReadRequest) -> None:
        # Called after the values were read, before the reply is sent.
        if request.table is Table.HOLDING_REGISTERS and request.address == CARD_ID_REGISTER:
            self.card_reads.append(time.monotonic())
            self._notify()
        elif (
            request.table is Table.COILS
            and request.address <= NEW_CARD_COIL < request.address + request.count
            and self.card_waiting
        ):
            self.flag_reads.append(time.monotonic())
            self._notify()

    def cancel_timers(self) -> None:
        for timer in self._relay_timers.values():
            timer.cancel()
        self._relay_timers.clear()

    def rearms(self) -> list[NodeWrite]:
        """The re-arm writes (coil 1016 = 0) among the writes kept (the latest 1,000)."""
        return [
            w
            for w in self.writes
            if w.kind is WriteKind.READER and w.address == NEW_CARD_COIL and w.value == COIL_OFF
        ]


class DoorNodeSimulator(ModbusLineSimulator):
    """A simulated door node on its own line, for a ``simulate: true`` device."""

    def __init__(
        self, config: DoorNodeSimConfig, workdir: Path, **options: Unpack[LineOptions]
    ) -> None:
        super().__init__(config, workdir, **options)
        self.config = config
        self.node = DoorNodeDevice(
            self.server, relay_slave=config.relay_slave, reader_slave=config.reader_slave
        )

    def _stopping(self) -> None:
        self.node.cancel_timers()

    # Script shortcuts, so tests and the benchmark need not reach into ``node``.

    def present_card(self, card: str) -> None:
        self.node.present_card(card)

    def open_door(self) -> None:
        self.node.open_door()

    def close_door(self) -> None:
        self.node.close_door()

    def press_exit(self) -> None:
        self.node.press_exit()

    def release_exit(self) -> None:
        self.node.release_exit()

    def stop_answering(self) -> None:
        self.node.stop_answering()

    def resume_answering(self) -> None:
        self.node.resume_answering()

    async def next_pulse(self) -> Pulse:
        return await self.node.next_pulse()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await self.node.wait_until(predicate)

    async def _ambient(self) -> None:
        """Residents: a card now and then, the door opened when let in; some leave."""
        lock = self.config.lock_relay
        while True:
            await self.ambient.pause(AMBIENT_PERIOD_S)
            if self._rng.random() < AMBIENT_UNKNOWN_SHARE:
                self.node.present_card(AMBIENT_UNKNOWN_CARD)
                continue
            self.node.present_card(self._rng.choice(AMBIENT_CARDS))
            try:
                async with asyncio.timeout(AMBIENT_WAIT_FOR_LOCK_S):
                    await self.node.wait_until(lambda: self.node.relay_on(lock))
            except TimeoutError:
                continue  # not let in (gateway down, card denied here): walk away
            self.node.open_door()
            await asyncio.sleep(self._rng.uniform(*AMBIENT_OPEN_S))
            self.node.close_door()
            if self._rng.random() < AMBIENT_EXIT_SHARE:
                # Someone leaves: exit button, then the door.
                await asyncio.sleep(self._rng.uniform(1.0, 2.0))
                self.node.press_exit()
                await asyncio.sleep(EXIT_PRESS_S)
                self.node.release_exit()
                self.node.open_door()
                await asyncio.sleep(self._rng.uniform(*AMBIENT_OPEN_S))
                self.node.close_door()


def make_simulator(
    config: DoorNodeSimConfig, workdir: Path, *, ambient: bool = True
) -> DoorNodeSimulator:
    """The simulator for a ``simulate: true`` door node."""
    return DoorNodeSimulator(config, workdir, ambient=ambient)
