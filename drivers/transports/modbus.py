"""The Modbus bus: one owner task per serial port (RTU) or TCP endpoint.

Every device on one RS-485 line (or behind one RS-485-to-Ethernet converter)
shares one ``ModbusBus``: one request in flight, always (PROTOCOLS.md,
"Common: Modbus RTU"). Callers queue a request with a ``BusPriority`` and
await a future; the bus task (``run``) takes requests from a priority heap,
door commands first, and is the only code that touches the pymodbus client.

- pymodbus's own reconnect is off (``reconnect_delay=0``); ``run`` reopens the
  port with capped, jittered exponential backoff (``drivers.transports.backoff``)
  and resets it on success.
- pymodbus retries are off too: the bus retries a timed-out request itself by
  putting it back in the heap at its old place, so a door command waits for at
  most one transaction attempt, never for a poll's whole retry sequence.
- A caller that is cancelled only abandons its future: the bus task finishes
  or times out the exchange itself, so the line is never left mid-frame.
- On RTU the bus keeps the 3.5-character silence between frames (fixed
  1.75 ms above 19200 baud) that pymodbus does not keep on its own. It counts
  from the last byte heard (pymodbus's ``trace_packet`` hook) and is waited
  with the bus's ``Timer`` (``drivers.transports.timing``), whose system one
  is accurate to a fraction of a millisecond where ``asyncio.sleep`` rounds up
  to the next one; that alone is worth about 4 % of a 9600-baud line
  (benchmarks/bench_bus_efficiency.py).
- Every deadline and wait of the bus but the exchange's own timeout (an
  ``asyncio.timeout`` on the loop) goes through that injected ``Timer``: the
  frame gap, a request's retry budget, slave probing and reconnect backoff
  are tested on a fake clock without sleeping.
- Replies are checked against their request (function code, register count,
  the echo of a write) before they settle a future. pymodbus 3.16's RTU
  framer drops the whole receive buffer when a candidate frame fails its CRC,
  so garbage in front of a reply costs that reply.
- Line noise is not silence. A reply that came garbled (bytes heard, then
  ``garbled_quiet_s`` of quiet with no valid frame among them, or noise until
  the timeout) or that does not match its request is retried at once, after
  the line is quiet, without waiting out the timeout and without using up a
  retry: only the request's time budget, ``timeout_ms x (retries + 1)`` from
  its first attempt, bounds these. A missing reply (nothing heard) is retried
  as before.
- A slave that stops answering is polled less and less often: once it has
  failed ``slave_backoff_after`` requests in a row with no reply at all and
  has been silent for ``slave_silent_s``, POLL requests to it fail fast with
  ``TransportError`` until the next probe time, which doubles up to a cap.
  Garbled replies never count: the slave is there, the line is noisy.
  COMMAND requests always go to the wire.

Errors, all ``TransportError``s (the transport layer imports nothing of the
project but its own modules): ``TransportError`` (port gone, slave backing
off), ``TransportTimeoutError`` (no valid answer after the retries) and
``ModbusExceptionError``, the slave's exception response with its code. A
driver turns the last into its device error: the slave answered and refused.

The bus knows Modbus, not devices: what a coil address or a 16-bit FC05 value
means (a relay board's pulse command, its address base) belongs to the
device's register map (``drivers.codecs.door_node_map``); the bus only sends
``write_coil_value``.

Longer than 400 lines because the bus owns the whole life of a line: the priority queue,
inter-frame silence, retries (garbled replies at once), reconnect, slave probing and the
pymodbus cancellation workarounds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.transports.backoff import Backoff
from drivers.transports.config import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from drivers.transports.errors import TransportError, TransportTimeoutError
from drivers.transports.timing import SystemTimer, Timer

_LOGGER = logging.getLogger(__name__)

ModbusConfig = ModbusRtuTransportConfig | ModbusTcpTransportConfig

CONNECT_TIMEOUT_S = 3.0
"""Bound on opening the serial port or the TCP connection."""
RECONNECT_INITIAL_S = 0.25
RECONNECT_MAX_S = 30.0
"""Reopen backoff: full jitter under a ceiling from 0.25 s doubling to 30 s
(the serial transport's default cap)."""
SLAVE_BACKOFF_AFTER = 3
"""Unanswered requests in a row before a slave's POLL requests are rationed..."""
SLAVE_SILENT_S = 3.0
"""...and the silence it must also have kept: a short glitch is not an outage."""
GARBLED_QUIET_S = 0.03
"""Quiet after the last byte heard that means a reply is over. Longer than the
16 ms an FTDI adapter may hold bytes back (its default ``latency_timer``), so a
reply split across USB packets is not taken for a garbled one."""
SLAVE_PROBE_INITIAL_S = 1.0
SLAVE_PROBE_MAX_S = 15.0
"""Probe interval of a silent slave: 1 s doubling to 15 s, so it is noticed
within 15 s of coming back while costing at most one timeout per 15 s."""
FAST_BAUD_GAP_S = 0.00175
"""Inter-frame silence above 19200 baud, fixed by the Modbus serial line spec."""
COIL_ON = 0xFF00
COIL_OFF = 0x0000
MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125


class BusPriority(IntEnum):
    """Queue order on a bus; lower goes first."""

    COMMAND = 0
    POLL = 1


class ModbusExceptionCode(IntEnum):
    """Exception codes of an exception response (function code | 0x80)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_NO_RESPONSE = 0x0B


class ModbusExceptionError(TransportError):
    """The slave answered with a Modbus exception response (it is there, and refused)."""

    def __init__(self, bus: str, slave: int, function_code: int, exception_code: int) -> None:
        try:
            name = ModbusExceptionCode(exception_code).name.lower()
        except ValueError:
            name = "unknown"
        super().__init__(
            f"{bus}/slave{slave}",
            f"modbus exception {exception_code:#04x} ({name}) to function {function_code:#04x}",
        )
        self.slave = slave
        self.function_code = function_code
        self.exception_code = exception_code


class RawCoilWrite(ModbusPDU):
    """FC05 with any 16-bit value; also the echo reply.

    pymodbus's ``WriteSingleCoilRequest`` only sends FF00/0000 and decodes the
    echo to a bool, but some devices give FC05 values of their own (the door
    node's relay board takes a pulse duration, PROTOCOLS.md). The simulators
    register this class on their decoder as well, to see the raw value.
    """

    function_code = 5
    rtu_frame_size = 8

    def __init__(
        self, address: int = 0, value: int = 0, dev_id: int = 0, transaction_id: int = 0
    ) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        """Encode address and value, big-endian."""
        self.verifyAddress()
        if not 0 <= self.value <= 0xFFFF:
            raise ValueError(f"0 <= value {self.value} <= 65535 !")
        return struct.pack(">HH", self.address, self.value)

    def decode(self, data: bytes) -> None:
        """Decode address and value."""
        self.address, self.value = struct.unpack(">HH", data[:4])
        self.bits = [self.value != COIL_OFF]


@dataclass(slots=True)
class BusStats:
    """Counters for status and benchmarks."""

    transactions: int = 0
    """Attempts that went to the wire (including retries)."""
    replies: int = 0
    timeouts: int = 0
    retries: int = 0
    exceptions: int = 0
    bad_replies: int = 0
    """Replies heard but garbled or not matching their request (retried at once)."""
    fast_failed: int = 0
    connects: int = 0
    connection_losses: int = 0


@dataclass(slots=True)
class _SlaveHealth:
    probes: Backoff
    silent_since: float
    failures: int = 0
    probe_interval_s: float = 0.0
    next_probe_at: float = 0.0


@dataclass(order=True, slots=True)
class _Pending:
    priority: int
    seq: int
    slave: int = field(compare=False)
    request: ModbusPDU = field(compare=False)
    future: asyncio.Future[ModbusPDU] = field(compare=False)
    attempts_left: int = field(compare=False)
    probe: bool = field(default=False, compare=False)
    taken: bool = field(default=False, compare=False)
    budget_until: float | None = field(default=None, compare=False)
    """Monotonic end of the time budget for garbled-reply retries (set at the first attempt)."""


def frame_gap_s(config: ModbusConfig) -> float:
    """Silence between RTU frames: 3.5 character times, 1.75 ms above 19200 baud."""
    if isinstance(config, ModbusTcpTransportConfig):
        return 0.0
    if config.baudrate > 19200:
        return FAST_BAUD_GAP_S
    bits = 1 + 8 + (0 if config.parity == "N" else 1) + config.stopbits
    return 3.5 * bits / config.baudrate


class ModbusBus:
    """One Modbus line (RTU port or TCP endpoint) shared by all its devices."""

    def __init__(
        self,
        config: ModbusConfig,
        *,
        name: str,
        reconnect_initial_s: float = RECONNECT_INITIAL_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        slave_backoff_after: int = SLAVE_BACKOFF_AFTER,
        slave_silent_s: float = SLAVE_SILENT_S,
        garbled_quiet_s: float = GARBLED_QUIET_S,
        slave_probe_initial_s: float = SLAVE_PROBE_INITIAL_S,
        slave_probe_max_s: float = SLAVE_PROBE_MAX_S,
        timer: Timer | None = None,
        backoff_rng: random.Random | None = None,
    ) -> None:
        if isinstance(config, ModbusRtuTransportConfig) and not config.port:
            raise ValueError(f"bus {name}: modbus_rtu transport has no port")
        if isinstance(config, ModbusTcpTransportConfig) and not config.host:
            raise ValueError(f"bus {name}: modbus_tcp transport has no host")
        self.config = config
        self.name = name
        self.stats = BusStats()
        self._timer: Timer = timer or SystemTimer()
        self._backoff_rng = backoff_rng  # None: Backoff's own (tests seed one)
        self._timeout_s = config.timeout_ms / 1000
        self._gap_s = frame_gap_s(config)
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._slave_backoff_after = slave_backoff_after
        self._slave_silent_s = slave_silent_s
        self._garbled_quiet_s = garbled_quiet_s
        # The exchange in flight: its timeout (cut short when the reply is
        # garbled), whether bytes were heard since the request, and the timer
        # that fires after the quiet that ends a reply.
        self._exchange: asyncio.Timeout | None = None
        self._heard = False
        self._garbled = False
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._slave_probe_initial_s = slave_probe_initial_s
        self._slave_probe_max_s = slave_probe_max_s
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._lost = False
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._slaves: dict[int, _SlaveHealth] = {}
        self._quiet_until = 0.0

    @property
    def connected(self) -> bool:
        """Whether the port is open (or the TCP connection up)."""
        return self._connected.is_set()

    def __repr__(self) -> str:
        return f"ModbusBus({self.name!r})"

    async def wait_connected(self) -> None:
        """Return once the line is open (wrap in ``asyncio.timeout``)."""
        await self._connected.wait()

    def backing_off(self, slave: int) -> bool:
        """Whether POLL requests to ``slave`` are being rationed (it stopped answering)."""
        return self._backing_off(slave)

    # ------------------------------------------------------------------ owner task

    async def run(self) -> None:
        """Own the line until cancelled: connect, serve the queue, reconnect.

        Closes the client and fails every waiting request on the way out.
        """
        delays = Backoff(
            initial_s=self._reconnect_initial_s,
            cap_s=self._reconnect_max_s,
            rng=self._backoff_rng,
        )
        was_down = False
        try:
            while True:
                try:
                    client = await self._connect()
                except TransportError as exc:
                    if not was_down:
                        _LOGGER.warning("bus=%s cannot open: %s", self.name, exc.reason)
                        was_down = True
                    self._fail_all(exc)
                    await self._timer.sleep(next(delays))
                    continue
                if was_down:
                    _LOGGER.info("bus=%s open again", self.name)
                    was_down = False
                delays.reset()
                try:
                    await self._serve(client)
                finally:
                    self._disconnect()
                _LOGGER.warning("bus=%s connection lost", self.name)
                was_down = True
                self._fail_all(TransportError(self.name, "connection lost"))
                await self._timer.sleep(next(delays))
        finally:
            self._disconnect()
            self._fail_all(TransportError(self.name, "bus stopped"))

    async def _connect(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        config = self.config
        client: AsyncModbusSerialClient | AsyncModbusTcpClient
        if isinstance(config, ModbusRtuTransportConfig):
            assert config.port is not None
            # Checked here so that an unplugged adapter does not make pymodbus
            # log a warning on every reopen attempt.
            if not os.path.exists(config.port):  # noqa: ASYNC240 -- one stat of a /dev path
                raise TransportError(self.name, f"no such port {config.port}")
            client = AsyncModbusSerialClient(
                config.port,
                framer=FramerType.RTU,
                baudrate=config.baudrate,
                bytesize=8,
                parity=config.parity,
                stopbits=config.stopbits,
                name=self.name,
                reconnect_delay=0,  # our run() reconnects, with our backoff
                timeout=CONNECT_TIMEOUT_S,
                retries=0,  # the bus retries, so a command can jump in between
                trace_connect=self._on_trace_connect,
                trace_packet=self._on_trace_packet,
            )
        else:
            assert config.host is not None
            client = AsyncModbusTcpClient(
                config.host,
                framer=FramerType.SOCKET,
                port=config.port,
                name=self.name,
                reconnect_delay=0,
                timeout=CONNECT_TIMEOUT_S,
                retries=0,
                trace_connect=self._on_trace_connect,
                trace_packet=self._on_trace_packet,
            )
        # pymodbus closes a TCP connection after a few unanswered requests; on
        # a shared bus one silent slave must not cut off the others.
        client.set_max_no_responses(1 << 30)
        client.register(RawCoilWrite)
        self._lost = False
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ok = await client.connect()
        except TimeoutError:
            client.close()
            raise TransportError(self.name, "open timed out") from None
        except BaseException:
            client.close()
            raise
        if not ok:
            client.close()
            raise TransportError(self.name, "cannot open")
        self.stats.connects += 1
        self._client = client
        self._quiet_until = 0.0
        self._connected.set()
        return client

    def _on_trace_packet(self, sending: bool, data: bytes) -> bytes:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if sending:
            self._heard = False
            return data
        # The silence before our next frame counts from the last byte heard,
        # not from when this task got round to looking at it.
        self._quiet_until = self._timer.monotonic() + self._gap_s
        if self._exchange is not None:
            self._heard = True
            self._quiet_timer = asyncio.get_running_loop().call_later(
                self._garbled_quiet_s, self._on_quiet
            )
        return data

    def _on_quiet(self) -> None:
        """Bytes were heard, then quiet, and the exchange is still waiting: garbled."""
        self._quiet_timer = None
        exchange = self._exchange
        if exchange is not None and self._heard and not exchange.expired():
            self._garbled = True
            exchange.reschedule(asyncio.get_running_loop().time())

    def _on_trace_connect(self, up: bool) -> None:
        if not up:
            self._lost = True
            self._wakeup.set()

    def _disconnect(self) -> None:
        self._connected.clear()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _fail_all(self, exc: TransportError) -> None:
        heap, self._heap = self._heap, []
        for entry in heap:
            entry.taken = True
            if not entry.future.done():
                entry.future.set_exception(TransportError(exc.where, exc.reason))

    async def _serve(self, client: AsyncModbusSerialClient | AsyncModbusTcpClient) -> None:
        """Process the queue until the connection is lost."""
        while True:
            if self._lost or not client.connected:
                self.stats.connection_losses += 1
                return
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            entry = heapq.heappop(self._heap)
            entry.taken = True
            if entry.future.done():
                continue
            if (
                entry.priority == BusPriority.POLL
                and not entry.probe
                and self._backing_off(entry.slave)
            ):
                self.stats.fast_failed += 1
                entry.future.set_exception(
                    TransportError(self.name, f"slave {entry.slave} backing off")
                )
                continue
            try:
                await self._attempt(client, entry)
            finally:
                # Settled or requeued, unless run() was cancelled mid-exchange.
                if entry.taken and not entry.future.done():
                    entry.future.set_exception(TransportError(self.name, "bus stopped"))
            _raise_if_cancelling()

    async def _attempt(
        self, client: AsyncModbusSerialClient | AsyncModbusTcpClient, entry: _Pending
    ) -> None:
        """One exchange on the wire; requeue for a retry, or settle the future."""
        if self._gap_s:
            await self._timer.sleep(self._quiet_until - self._timer.monotonic())
        self.stats.transactions += 1
        if entry.budget_until is None:
            budget_s = self._timeout_s * (self.config.retries + 1)
            entry.budget_until = self._timer.monotonic() + budget_s
        reason: str
        self._garbled = False
        try:
            async with asyncio.timeout(self._timeout_s) as exchange:
                self._exchange = exchange
                response = await client.execute(False, entry.request)
        except TimeoutError:
            # Bytes heard but no valid frame among them (whether the quiet
            # after them came or the noise went on): garbled, not silent.
            reason = "bad reply: garbled" if self._garbled or self._heard else "no reply"
        except ConnectionException:
            self._lost = True
            reason = "connection lost"
        except ModbusException as exc:
            reason = f"bad reply: {exc}"
        else:
            problem = self._check_reply(entry, response)
            if problem is None:
                self._settle_ok(entry, response)
                return
            reason = problem
        finally:
            self._exchange = None
        if self._lost:
            # The line is gone, not the slave: no retry, no slave backoff.
            if not entry.future.done():
                entry.future.set_exception(TransportError(self.name, "connection lost"))
            return
        silent = reason == "no reply"
        if silent:
            self.stats.timeouts += 1
            entry.attempts_left -= 1
        else:
            # Heard but garbled: the slave is there and the line is free again
            # (quiet), so try again now, within the request's time budget.
            self.stats.bad_replies += 1
            if self._timer.monotonic() >= entry.budget_until:
                entry.attempts_left = 0
        if entry.attempts_left > 0 and not entry.future.done():
            # Back at its old place: only a command can go before the retry.
            self.stats.retries += 1
            entry.taken = False
            heapq.heappush(self._heap, entry)
            return
        if silent:
            asked_at = entry.budget_until - self._timeout_s * (self.config.retries + 1)
            self._slave_failed(entry.slave, asked_at)
        if not entry.future.done():
            entry.future.set_exception(
                TransportTimeoutError(
                    self.name,
                    f"slave {entry.slave} function {entry.request.function_code}: {reason}",
                )
            )

    def _check_reply(self, entry: _Pending, response: ModbusPDU) -> str | None:
        """Return why ``response`` does not answer ``entry``, or None when it does."""
        request = entry.request
        if isinstance(response, ExceptionResponse):
            if response.function_code & 0x7F != request.function_code:
                return "bad reply: exception to another function"
            return None
        if response.function_code != request.function_code:
            return f"bad reply: function {response.function_code} to {request.function_code}"
        if isinstance(request, ReadCoilsRequest):  # also discrete inputs
            if len(response.bits) < request.count:
                return "bad reply: too few bits"
        elif isinstance(request, ReadHoldingRegistersRequest):  # also input registers
            if len(response.registers) != request.count:
                return "bad reply: wrong register count"
        elif isinstance(request, RawCoilWrite):
            if not isinstance(response, RawCoilWrite) or (response.address, response.value) != (
                request.address,
                request.value,
            ):
                return "bad reply: echo differs"
        elif isinstance(request, WriteSingleRegisterRequest) and (
            response.address != request.address
            or list(response.registers) != list(request.registers)
        ):
            return "bad reply: echo differs"
        return None

    def _settle_ok(self, entry: _Pending, response: ModbusPDU) -> None:
        self.stats.replies += 1
        health = self._slaves.pop(entry.slave, None)
        if health is not None and health.probe_interval_s > 0:
            _LOGGER.info("bus=%s slave=%d answers again", self.name, entry.slave)
        if entry.future.done():
            return
        if isinstance(response, ExceptionResponse):
            self.stats.exceptions += 1
            entry.future.set_exception(
                ModbusExceptionError(
                    self.name, entry.slave, entry.request.function_code, response.exception_code
                )
            )
        else:
            entry.future.set_result(response)

    # ------------------------------------------------------------- slave backoff

    def _backing_off(self, slave: int) -> bool:
        health = self._slaves.get(slave)
        return health is not None and health.probe_interval_s > 0

    def _take_probe(self, slave: int) -> bool | None:
        """None: slave healthy. True: this POLL may probe now. False: fail fast."""
        health = self._slaves.get(slave)
        if health is None or health.probe_interval_s <= 0:
            return None
        now = self._timer.monotonic()
        if now < health.next_probe_at:
            return False
        # Reserve the probe slot so that only one POLL goes out per interval.
        health.next_probe_at = now + health.probe_interval_s
        return True

    def _slave_failed(self, slave: int, asked_at: float) -> None:
        """A request first sent at ``asked_at`` got no reply at all."""
        health = self._slaves.get(slave)
        if health is None:
            health = self._slaves[slave] = _SlaveHealth(
                Backoff(
                    initial_s=self._slave_probe_initial_s,
                    cap_s=self._slave_probe_max_s,
                    jitter=False,
                ),
                silent_since=asked_at,
            )
        health.failures += 1
        if health.failures < self._slave_backoff_after:
            return
        if health.probe_interval_s <= 0:
            if self._timer.monotonic() - health.silent_since < self._slave_silent_s:
                return  # a glitch so far, not an outage: keep polling it
            _LOGGER.warning(
                "bus=%s slave=%d not answering; polling it less often", self.name, slave
            )
        health.probe_interval_s = next(health.probes)
        health.next_probe_at = self._timer.monotonic() + health.probe_interval_s

    # ----------------------------------------------------------------- requests

    async def _request(self, slave: int, request: ModbusPDU, priority: BusPriority) -> ModbusPDU:
        if not 0 <= slave <= 255:
            raise ValueError(f"slave id {slave} out of 0..255")
        request.dev_id = slave
        probe = False
        if priority is BusPriority.POLL:
            verdict = self._take_probe(slave)
            if verdict is False:
                self.stats.fast_failed += 1
                raise TransportError(self.name, f"slave {slave} backing off")
            probe = verdict is True
        if not self._connected.is_set():
            # Grace for a bus that is still opening (daemon start, replug).
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._connected.wait()
            except TimeoutError:
                raise TransportError(self.name, "not connected") from None
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        entry = _Pending(
            priority=int(priority),
            seq=next(self._seq),
            slave=slave,
            request=request,
            future=future,
            # A probe is not retried: one timeout per probe interval is the point.
            attempts_left=1 if probe else self.config.retries + 1,
            probe=probe,
        )
        heapq.heappush(self._heap, entry)
        self._wakeup.set()
        try:
            return await future
        finally:
            if not entry.taken:
                # Cancelled while queued: the bus never sees it.
                self._heap.remove(entry)
                heapq.heapify(self._heap)

    async def read_coils(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[bool]:
        """FC01. Raises TransportError, TransportTimeoutError or ModbusExceptionError."""
        _check_range(address, count, MAX_READ_BITS)
        response = await self._request(
            slave, ReadCoilsRequest(address=address, count=count), priority
        )
        return list(response.bits[:count])

    async def read_discrete_inputs(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[bool]:
        """FC02. Raises as ``read_coils``."""
        _check_range(address, count, MAX_READ_BITS)
        response = await self._request(
            slave, ReadDiscreteInputsRequest(address=address, count=count), priority
        )
        return list(response.bits[:count])

    async def read_holding_registers(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[int]:
        """FC03. Raises as ``read_coils``."""
        _check_range(address, count, MAX_READ_REGISTERS)
        response = await self._request(
            slave, ReadHoldingRegistersRequest(address=address, count=count), priority
        )
        return list(response.registers)

    async def read_input_registers(
        self, slave: int, address: int, count: int, *, priority: BusPriority = BusPriority.POLL
    ) -> list[int]:
        """FC04. Raises as ``read_coils``."""
        _check_range(address, count, MAX_READ_REGISTERS)
        response = await self._request(
            slave, ReadInputRegistersRequest(address=address, count=count), priority
        )
        return list(response.registers)

    async def write_coil(
        self, slave: int, address: int, value: bool, *, priority: BusPriority = BusPriority.POLL
    ) -> None:
        """FC05 with FF00 (on) or 0000 (off); the echo is checked. Raises as ``read_coils``."""
        _check_range(address, 1, 1)
        await self._request(
            slave, RawCoilWrite(address=address, value=COIL_ON if value else COIL_OFF), priority
        )

    async def write_register(
        self, slave: int, address: int, value: int, *, priority: BusPriority = BusPriority.POLL
    ) -> None:
        """FC06; the echo is checked. Raises as ``read_coils``."""
        _check_range(address, 1, 1)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} out of 0..65535")
        await self._request(
            slave, WriteSingleRegisterRequest(address=address, registers=[value]), priority
        )

    async def write_coil_value(
        self, slave: int, address: int, value: int, *, priority: BusPriority = BusPriority.POLL
    ) -> None:
        """FC05 with any 16-bit ``value`` (a device's own command, e.g. a relay pulse);
        the echo is checked. Raises as ``read_coils``."""
        _check_range(address, 1, 1)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"coil value {value} out of 0..65535")
        await self._request(slave, RawCoilWrite(address=address, value=value), priority)


def _check_range(address: int, count: int, max_count: int) -> None:
    if not 1 <= count <= max_count:
        raise ValueError(f"count {count} out of 1..{max_count}")
    if address < 0 or address + count > 0x10000:
        raise ValueError(f"address range {address}+{count} outside 0..65535")


def _raise_if_cancelling() -> None:
    """Honour a cancellation that pymodbus swallowed.

    On Python 3.11, ``asyncio.wait_for`` (inside pymodbus' ``execute``) drops a
    cancellation that arrives together with the reply; without this check the
    bus task would go back to waiting for work and hang the shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
