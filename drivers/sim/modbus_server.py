"""A Modbus slave simulator: RTU on a pseudo-terminal, and Modbus TCP on loopback.

Shared by the Modbus device simulators (temperature gate, door node). It
speaks the real protocol with pymodbus's own pieces: its server-side framers
(``FramerRTU`` / ``FramerSocket``) find and check frames, its request classes
decode them and run against our datastore through the same
``datastore_update`` a pymodbus server uses, and its framers encode replies.

Why not pymodbus's ``ModbusSerialServer``: it opens a serial port by path, so
on a pty it would need a second pty and a relay between them, and unplug /
replug would mean restarting the server. Here the simulator keeps the master
side of a ``PtyLink`` and reads it directly; the driver opens ``link.path``
exactly as it opens ``/dev/ttyUSB0``. One dispatch core serves RTU and TCP, so
the faults (stop answering, garbage, reply delay) behave the same on both.

What a test can script:

- several slave ids, each a ``SlaveStore`` of four sparse tables; reading an
  address that was never defined answers "illegal data address" (02);
- a write hook per slave, called before a write is applied, which may accept
  the write without storing it (``WriteOutcome.ACCEPT``: the relay board's
  pulse command, FC05 to 0x0200+n with any value, echoed), reject it with an
  exception code, or let it store (``WriteOutcome.STORE``); a read hook, called
  after a read was answered (a status bit that clears on read);
- ``answering`` (whole line), ``silence(slave)`` and ``ignore_next`` (the next
  requests to one address): requests are received and counted but not answered;
- ``reply_delay_s`` (the device's own turnaround) and, on RTU, emulated wire
  time at the configured baud rate: ptys ignore baud (PROTOCOLS.md), so the
  reply is written when its last byte would have arrived on a real line:
  request time + max(reply delay, 3.5 characters) + reply time;
- garbage: raw bytes now, a garbage prefix or a bad CRC on the next replies,
  or a burst of noise that breaks every reply while it lasts (``noise_burst``);
- ``unplug()`` / ``replug()``: the pty disappears and comes back at the same
  path (the TCP listener and its connections close and reopen on the same port).

Longer than 400 lines because one server speaks RTU and TCP with wire timing, faults
(silence, garbage, unplug) and a request log for tests; every Modbus simulator builds on
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException, NotImplementedException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from drivers.sim.base import SimEndpoint
from drivers.sim.noise import LineNoise
from drivers.sim.pty import PtyLink
from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from drivers.transports.modbus import COIL_OFF, COIL_ON, FAST_BAUD_GAP_S, RawCoilWrite
from drivers.transports.timing import sleep_until

_LOGGER = logging.getLogger(__name__)

READ_CHUNK = 4096
MAX_TCP_BUFFER = 260
"""An MBAP frame is at most 260 bytes; more unparsed input is garbage."""
MAX_RTU_BUFFER = 512
REQUEST_LOG_LEN = 2000
"""Requests kept in ``ModbusSimServer.requests`` (oldest dropped first)."""


class Table(StrEnum):
    """The four Modbus data tables."""

    COILS = "coils"
    DISCRETE_INPUTS = "discrete_inputs"
    HOLDING_REGISTERS = "holding_registers"
    INPUT_REGISTERS = "input_registers"


_FUNCTION_TABLE: dict[int, Table] = {
    1: Table.COILS,
    5: Table.COILS,
    15: Table.COILS,
    2: Table.DISCRETE_INPUTS,
    3: Table.HOLDING_REGISTERS,
    6: Table.HOLDING_REGISTERS,
    16: Table.HOLDING_REGISTERS,
    22: Table.HOLDING_REGISTERS,
    23: Table.HOLDING_REGISTERS,
    4: Table.INPUT_REGISTERS,
}
_READ_FUNCTIONS = frozenset({1, 2, 3, 4})


class WriteOutcome(Enum):
    """What a write hook decides."""

    STORE = "store"
    """Apply the write to the table (the default)."""
    ACCEPT = "accept"
    """FC05: answer with the echo without storing (any value accepted).
    Other functions store as with STORE, since their reply reads the table back."""


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A write as the slave received it. ``values`` are raw: FC05 gives the 16-bit value."""

    slave: int
    function_code: int
    table: Table
    address: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    slave: int
    function_code: int
    table: Table
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """One request received on the line, answered or not."""

    slave: int
    function_code: int
    address: int
    answered: bool
    at: float
    """Monotonic time when its last byte arrived."""


WriteHook = Callable[[WriteRequest], WriteOutcome | int]
"""Return a ``WriteOutcome``, or a Modbus exception code to refuse the write."""
ReadHook = Callable[[ReadRequest], None]


@dataclass(slots=True)
class SlaveStore:
    """One slave id's data: four sparse tables (bits kept as 0/1)."""

    slave: int
    tables: dict[Table, dict[int, int]] = field(
        default_factory=lambda: {table: {} for table in Table}
    )
    write_hook: WriteHook | None = None
    read_hook: ReadHook | None = None

    def set(self, table: Table, address: int, values: Sequence[int | bool]) -> None:
        """Define or overwrite ``values`` from ``address`` (the device side)."""
        cells = self.tables[table]
        for offset, value in enumerate(values):
            cells[address + offset] = int(value)

    def get(self, table: Table, address: int, count: int = 1) -> list[int] | None:
        """The values, or None when any address in the range is undefined."""
        cells = self.tables[table]
        try:
            return [cells[address + offset] for offset in range(count)]
        except KeyError:
            return None


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Serial line parameters, for emulated wire time."""

    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        """One character: start + 8 data + parity + stop bits."""
        return (1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits) / self.baudrate

    @property
    def gap_s(self) -> float:
        """3.5 characters of silence, fixed 1.75 ms above 19200 baud."""
        return FAST_BAUD_GAP_S if self.baudrate > 19200 else 3.5 * self.char_s


class _Context:
    """The datastore interface pymodbus request classes run against."""

    def __init__(self, server: ModbusSimServer) -> None:
        self._server = server

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        store = self._server.slaves[device_id]
        table = _FUNCTION_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = store.get(table, address, count)
        if values is None:
            return ExcCodes.ILLEGAL_ADDRESS
        if func_code in _READ_FUNCTIONS and store.read_hook is not None:
            store.read_hook(ReadRequest(device_id, func_code, table, address, count))
        if table in (Table.COILS, Table.DISCRETE_INPUTS):
            return [bool(value) for value in values]
        return values

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        store = self._server.slaves[device_id]
        table = _FUNCTION_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        raw = tuple(int(value) for value in values)
        outcome = self._server.run_write_hook(
            store, WriteRequest(device_id, func_code, table, address, raw)
        )
        if isinstance(outcome, ExcCodes):
            return outcome
        if store.get(table, address, len(raw)) is None:
            return ExcCodes.ILLEGAL_ADDRESS
        store.set(table, address, raw)
        return None


class ModbusSimServer:
    """Simulated Modbus slaves on one line: a pty (RTU) and/or a loopback TCP port."""

    def __init__(
        self,
        *,
        name: str = "modbus-sim",
        line: LineTiming | None = None,
        wire_timing: bool = False,
        reply_delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self.line = line or LineTiming()
        self.wire_timing = wire_timing
        self.reply_delay_s = reply_delay_s
        self.slaves: dict[int, SlaveStore] = {}
        self.answering = True
        self.requests: deque[RequestSeen] = deque(maxlen=REQUEST_LOG_LEN)
        self.received = 0
        self.answered = 0
        self.discarded = 0
        """Bytes that did not form a request (garbage, bad CRC)."""
        self._silent: set[int] = set()
        self._ignore: dict[tuple[int, int], int] = {}
        self._context = _Context(self)
        self._tick = asyncio.Event()
        self.noise = LineNoise(self.inject_garbage)
        """Corrupted replies and garbage bursts on this line (``drivers.sim.noise``)."""
        self._reply_prefix = b""
        self._tasks: set[asyncio.Task[None]] = set()
        # RTU side
        self.link: PtyLink | None = None
        self._rtu_framer: FramerRTU | None = None
        self._rtu_buffer = b""
        self._rtu_queue: asyncio.Queue[tuple[float, int, ModbusPDU]] = asyncio.Queue()
        self._rtu_busy_until = 0.0
        # TCP side
        self._tcp_host = "127.0.0.1"
        self._tcp_port: int | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._tcp_lock = asyncio.Lock()

    # ------------------------------------------------------------------ slaves

    def add_slave(self, slave: int) -> SlaveStore:
        """Create (or return) the store of ``slave``."""
        if not 1 <= slave <= 247:
            raise ValueError(f"slave id {slave} out of 1..247")
        return self.slaves.setdefault(slave, SlaveStore(slave))

    def silence(self, slave: int, silent: bool = True) -> None:
        """Make one slave stop (or resume) answering; the others carry on."""
        if silent:
            self._silent.add(slave)
        else:
            self._silent.discard(slave)

    def ignore_next(self, count: int, *, slave: int, address: int) -> None:
        """Leave the next ``count`` requests to ``slave`` at ``address`` unanswered."""
        key = (slave, address)
        self._ignore[key] = self._ignore.get(key, 0) + count

    def _ignored(self, pdu: ModbusPDU) -> bool:
        key = (pdu.dev_id, pdu.address)
        left = self._ignore.get(key, 0)
        if left:
            self._ignore[key] = left - 1
        return left > 0

    def is_silent(self, slave: int) -> bool:
        return not self.answering or slave in self._silent

    def run_write_hook(self, store: SlaveStore, request: WriteRequest) -> WriteOutcome | ExcCodes:
        if store.write_hook is None:
            return WriteOutcome.STORE
        outcome = store.write_hook(request)
        if isinstance(outcome, WriteOutcome):
            return outcome
        return ExcCodes(outcome)

    # ------------------------------------------------------------ fault script

    def inject_garbage(self, data: bytes) -> None:
        """Write ``data`` to the driver now (RTU pty and every TCP connection)."""
        if self.link is not None:
            self.link.write(data)
        for writer in list(self._tcp_writers):
            writer.write(data)

    def corrupt_next_replies(self, count: int = 1) -> None:
        """Send the next ``count`` replies with a flipped bit (RTU) / truncated (TCP)."""
        self.noise.corrupt_next(count)

    def noise_burst(self, duration_s: float) -> None:
        """Garbage on the line, and every reply broken, for ``duration_s`` from now."""
        self.noise.burst(duration_s)

    def prefix_next_reply(self, garbage: bytes) -> None:
        """Put ``garbage`` on the line just before the next reply."""
        self._reply_prefix += garbage

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking after every request.

        Wrap in ``asyncio.timeout``: this waits for a fact, for as long as it takes.
        """
        while not predicate():
            await self._tick.wait()

    def requests_to(self, slave: int) -> int:
        """How many requests to ``slave`` are in the log."""
        return sum(1 for seen in self.requests if seen.slave == slave)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, pdu: ModbusPDU, arrived: float) -> ModbusPDU | None:
        """Answer one request, or None for silence."""
        slave = pdu.dev_id
        store = self.slaves.get(slave)
        answer = store is not None and not self.is_silent(slave) and not self._ignored(pdu)
        self.received += 1
        self.requests.append(RequestSeen(slave, pdu.function_code, pdu.address, answer, arrived))
        self._tick.set()
        self._tick = asyncio.Event()
        if store is None or not answer:
            return None
        response: ModbusPDU
        if isinstance(pdu, RawCoilWrite):
            response = self._write_coil(store, pdu)
        else:
            try:
                # Duck-typed: pymodbus only calls async_getValues/async_setValues.
                response = await pdu.datastore_update(self._context, slave)  # type: ignore[arg-type]
            except NotImplementedException:
                response = ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_FUNCTION)
        response.dev_id = slave
        response.transaction_id = pdu.transaction_id
        self.answered += 1
        return response

    def _write_coil(self, store: SlaveStore, pdu: RawCoilWrite) -> ModbusPDU:
        outcome = self.run_write_hook(
            store, WriteRequest(store.slave, 5, Table.COILS, pdu.address, (pdu.value,))
        )
        if isinstance(outcome, ExcCodes):
            return ExceptionResponse(5, outcome)
        if outcome is WriteOutcome.STORE:
            if pdu.value not in (COIL_ON, COIL_OFF):
                return ExceptionResponse(5, ExcCodes.ILLEGAL_VALUE)
            if store.get(Table.COILS, pdu.address) is None:
                return ExceptionResponse(5, ExcCodes.ILLEGAL_ADDRESS)
            store.set(Table.COILS, pdu.address, [pdu.value == COIL_ON])
        return RawCoilWrite(address=pdu.address, value=pdu.value)

    @staticmethod
    def _make_framer(framer_type: type[FramerBase]) -> FramerBase:
        decoder = DecodePDU(True)
        decoder.register(RawCoilWrite)
        return framer_type(decoder)

    def _finish_frame(self, frame: bytes, *, rtu: bool) -> bytes:
        frame = self.noise.garble(frame, truncate=not rtu)
        if self._reply_prefix:
            frame, self._reply_prefix = self._reply_prefix + frame, b""
        return frame

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro, name=f"{self.name} {name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------------- RTU

    async def start_rtu(self, path: Path) -> str:
        """Plug a pty at ``path`` and serve RTU on it; return the path for the driver."""
        if self.link is not None:
            raise RuntimeError("RTU side already started")
        self.link = PtyLink(path)
        self._rtu_framer = self._make_framer(FramerRTU)  # type: ignore[assignment]
        self._spawn(self._rtu_worker(), "rtu worker")
        self.replug()
        return str(path)

    def unplug(self) -> None:
        """Pull the adapter: the pty and its path disappear (TCP: the listener closes)."""
        if self.link is not None and self.link.master_fd is not None:
            asyncio.get_running_loop().remove_reader(self.link.master_fd)
            self.link.unplug()
        self._rtu_buffer = b""
        if self._tcp_server is not None:
            self._tcp_server.close()
            self._tcp_server = None
            for writer in list(self._tcp_writers):
                writer.close()

    def replug(self) -> None:
        """Put the adapter back at the same path (TCP: listen again on the same port)."""
        if self.link is not None and not self.link.plugged:
            self.link.plug()
            assert self.link.master_fd is not None
            asyncio.get_running_loop().add_reader(self.link.master_fd, self._on_rtu_readable)
        if self._tcp_port is not None and self._tcp_server is None:
            self._spawn(self._listen(), "tcp relisten")

    def _on_rtu_readable(self) -> None:
        assert self.link is not None and self.link.master_fd is not None
        try:
            data = os.read(self.link.master_fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        arrived = time.monotonic()
        self._rtu_buffer += data
        assert self._rtu_framer is not None
        while self._rtu_buffer:
            try:
                used, pdu = self._rtu_framer.handleFrame(self._rtu_buffer, 0, 0)
            except ModbusException:
                self.discarded += len(self._rtu_buffer)
                self._rtu_buffer = b""
                return
            if pdu is None:
                if used:  # a frame with a bad CRC, or garbage: dropped
                    self.discarded += used
                    self._rtu_buffer = self._rtu_buffer[used:]
                    continue
                if len(self._rtu_buffer) > MAX_RTU_BUFFER:
                    self.discarded += len(self._rtu_buffer)
                    self._rtu_buffer = b""
                return
            self._rtu_buffer = self._rtu_buffer[used:]
            self._rtu_queue.put_nowait((arrived, used, pdu))

    async def _rtu_worker(self) -> None:
        """Answer RTU requests one at a time, as a single line does."""
        assert self._rtu_framer is not None
        while True:
            arrived, length, pdu = await self._rtu_queue.get()
            response = await self._dispatch(pdu, arrived)
            if response is None:
                continue
            frame = self._finish_frame(self._rtu_framer.buildFrame(response), rtu=True)
            due = arrived + self.reply_delay_s
            if self.wire_timing:
                line = self.line
                due = (
                    max(arrived, self._rtu_busy_until)
                    + length * line.char_s
                    + max(self.reply_delay_s, line.gap_s)
                    + len(frame) * line.char_s
                )
                self._rtu_busy_until = due
            await sleep_until(due)
            if self.link is not None:
                self.link.write(frame)

    # ----------------------------------------------------------------------- TCP

    async def start_line(
        self,
        transport: ModbusRtuTransportConfig | ModbusTcpTransportConfig,
        workdir: Path,
        name: str,
    ) -> SimEndpoint:
        """Serve the device's configured transport: a pty ``workdir/name.tty`` (RTU) or a
        loopback TCP port (Modbus TCP). Returns where the driver attaches."""
        if isinstance(transport, ModbusRtuTransportConfig):
            workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one-off set-up
            return SimEndpoint(port=await self.start_rtu(workdir / f"{name}.tty"))
        return SimEndpoint(host="127.0.0.1", tcp_port=await self.start_tcp("127.0.0.1", 0))

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus TCP on ``host``; return the port (a free one when 0)."""
        if self._tcp_port is not None:
            raise RuntimeError("TCP side already started")
        self._tcp_host = host
        self._tcp_port = port
        await self._listen()
        return self._tcp_port

    async def _listen(self) -> None:
        server = await asyncio.start_server(
            self._serve_tcp, self._tcp_host, self._tcp_port, reuse_address=True
        )
        self._tcp_port = server.sockets[0].getsockname()[1]
        self._tcp_server = server

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = self._make_framer(FramerSocket)
        self._tcp_writers.add(writer)
        buffer = b""
        try:
            while data := await reader.read(READ_CHUNK):
                arrived = time.monotonic()
                buffer += data
                while buffer:
                    try:
                        used, pdu = framer.handleFrame(buffer, 0, 0)
                    except ModbusException:
                        self.discarded += len(buffer)
                        buffer = b""
                        break
                    if not used:
                        if len(buffer) > MAX_TCP_BUFFER:  # not MBAP at all: drop
                            self.discarded += len(buffer)
                            buffer = b""
                        break
                    buffer = buffer[used:]
                    if pdu is None:
                        self.discarded += used
                        continue
                    async with self._tcp_lock:  # one transaction at a time, as on the line
                        response = await self._dispatch(pdu, arrived)
                        if response is None:
                            continue
                        delay = arrived + self.reply_delay_s - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        writer.write(self._finish_frame(framer.buildFrame(response), rtu=False))
        except ConnectionError:
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    # ------------------------------------------------------------------ lifecycle

    async def stop(self) -> None:
        """Close the pty, the listener and every connection; cancel our tasks."""
        self.noise.cancel()
        self.unplug()
        self._tcp_port = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in list(self._tcp_writers):
            writer.close()
