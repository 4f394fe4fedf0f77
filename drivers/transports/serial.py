"""Async serial port (DESIGN.md, "Transports are thin"), and its reopen loop.

``SerialTransport`` opens a port with pyserial (termios settings, an exclusive
``flock``, and ``ASYNC_LOW_LATENCY`` where the driver supports it) and then does
its own non-blocking I/O on the file descriptor with ``loop.add_reader`` /
``add_writer``. It knows nothing of devices: bytes in, bytes out, and every
failure is a ``TransportError``.

Why not ``pyserial-asyncio-fast``'s ``open_serial_connection``: its transport
closes the port from a detached background task (kept in a module-global set),
drains output with ``tcdrain`` in an executor thread first (which can hang on a
pulled adapter), and turns a lost port into an exception inside a
``StreamReader`` after a round trip through the event loop's exception handler.
We need a synchronous, deterministic close (STYLE.md §4: a failed or cancelled
session leaves nothing behind), errno-level detail for the EIO / ENODEV / EOF
that a pulled USB adapter produces, and a path watchdog; all of that is a
hundred lines on top of pyserial, which stays the one doing the termios work.

``run_serial`` owns the port's life cycle: open, hand the transport to a
session coroutine, and when the port vanishes (EIO, ENODEV, hangup, path gone)
close it, report ``on_down`` and reopen with capped, jittered exponential
backoff (``drivers.transports.backoff``), reporting ``on_up`` when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import serial

from drivers.transports.backoff import Backoff
from drivers.transports.config import SerialTransportConfig
from drivers.transports.errors import TransportError, TransportTimeoutError

__all__ = ["SerialTransport", "run_serial"]

_LOGGER = logging.getLogger(__name__)

READ_CHUNK = 4096
"""Bytes per ``os.read``: more than a pty or USB adapter delivers at once."""
MAX_RX_BUFFER = 64 * 1024
"""Bytes buffered when the reader falls behind; the oldest are dropped beyond it."""
WRITE_TIMEOUT_S = 2.0
"""A write that cannot complete in this time means the line is stuck (flow control)."""
PRESENCE_CHECK_S = 1.0
"""How often a waiting reader checks that the port path still exists and is the
device it opened; catches adapters whose removal does not wake the fd."""
REOPEN_INITIAL_S = 0.1
"""First reopen delay (before jitter); the cap is ``reopen_max_s`` from config."""
STABLE_AFTER_S = 5.0
"""A session that stayed up this long resets the backoff (STYLE.md §5)."""

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOPBITS = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


def _os_reason(action: str, exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else "unknown"
    return f"{action} failed: {code} ({exc.strerror or exc})"


class SerialTransport:
    """One serial port, opened once. Make a new one to reopen."""

    def __init__(
        self,
        config: SerialTransportConfig,
        *,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_rx_buffer: int = MAX_RX_BUFFER,
    ) -> None:
        self._config = config
        self.port = config.port or ""
        self._write_timeout_s = write_timeout_s
        self._max_rx_buffer = max_rx_buffer
        self._serial: Any = None  # serial.Serial: untyped I/O edge
        self._fd = -1
        self._rdev: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rx = bytearray()
        self._error: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.low_latency = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.rx_overruns = 0

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._error is None

    async def open(self) -> None:
        """Open and configure the port.

        Raises:
            TransportError: no port configured, or the port cannot be opened.
        """
        if self._serial is not None:
            raise TransportError(self.port, "already open")
        if not self.port:
            raise TransportError("serial", "no port configured")
        cfg = self._config
        ser = serial.Serial()
        ser.port = self.port
        ser.baudrate = cfg.baudrate
        ser.bytesize = serial.EIGHTBITS
        ser.parity = _PARITY[cfg.parity]
        ser.stopbits = _STOPBITS[cfg.stopbits]
        ser.timeout = 0
        ser.write_timeout = 0
        ser.exclusive = True  # flock: a second process on the same port fails loudly
        try:
            # O_NONBLOCK open plus termios: sub-millisecond, no executor needed.
            ser.open()
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            raise TransportError(self.port, f"open failed: {exc}") from exc
        try:
            self._fd = ser.fileno()
            self._rdev = os.fstat(self._fd).st_rdev
            try:
                ser.set_low_latency_mode(True)
                self.low_latency = True
            except (ValueError, OSError, NotImplementedError):
                # ptys and some adapters have no serial_struct: nothing to tune.
                _LOGGER.debug("low latency mode not supported port=%s", self.port)
            self._loop = asyncio.get_running_loop()
            self._serial = ser
            self._loop.add_reader(self._fd, self._on_readable)
        except BaseException:
            self._serial = None
            with contextlib.suppress(OSError):
                ser.close()
            raise
        _LOGGER.debug(
            "opened port=%s baud=%d low_latency=%s", self.port, cfg.baudrate, self.low_latency
        )

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(_os_reason("read", exc))
            return
        if not data:
            # A pty whose master closed, or a tty hung up: the adapter is gone.
            self._fail("hangup (end of file)")
            return
        self.bytes_in += len(data)
        self._rx += data
        overflow = len(self._rx) - self._max_rx_buffer
        if overflow > 0:
            del self._rx[:overflow]
            self.rx_overruns += overflow
        self._wake()

    def _wake(self) -> None:
        for waiter in (self._waiter, self._write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._wake()

    def _check_present(self) -> None:
        try:
            rdev = os.stat(self.port).st_rdev
        except FileNotFoundError:
            self._fail("port path gone")
            return
        except OSError as exc:
            self._fail(_os_reason("stat", exc))
            return
        if self._rdev is not None and rdev != self._rdev:
            self._fail("port path now names another device")

    async def read(self) -> bytes:
        """Wait for and return the bytes received so far (at least one).

        The caller bounds the wait with ``asyncio.timeout``.

        Raises:
            TransportError: the port is closed or gone.
        """
        loop = self._loop
        while True:
            if data := self.read_nowait():
                return data
            if self._serial is None or loop is None:
                raise TransportError(self.port, "not open")
            waiter = loop.create_future()
            self._waiter = waiter
            try:
                async with asyncio.timeout(PRESENCE_CHECK_S):
                    await waiter
            except TimeoutError:
                self._check_present()
            finally:
                self._waiter = None

    def read_nowait(self) -> bytes:
        """Return whatever is buffered, possibly nothing.

        Raises:
            TransportError: nothing is buffered and the port is closed or gone.
        """
        if self._rx:
            data = bytes(self._rx)
            self._rx.clear()
            return data
        if self._error is not None:
            raise TransportError(self.port, self._error)
        return b""

    async def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting for room in the output buffer.

        Raises:
            TransportError: the port is closed or gone.
            TransportTimeoutError: the bytes could not be written in time.
        """
        if self._error is not None:
            raise TransportError(self.port, self._error)
        loop = self._loop
        if self._serial is None or loop is None:
            raise TransportError(self.port, "not open")
        view = memoryview(data)
        try:
            async with asyncio.timeout(self._write_timeout_s):
                while view:
                    try:
                        n = os.write(self._fd, view)
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError as exc:
                        self._fail(_os_reason("write", exc))
                        raise TransportError(self.port, self._error or "write failed") from exc
                    self.bytes_out += n
                    view = view[n:]
                    if view:
                        await self._writable(loop)
        except TimeoutError as exc:
            raise TransportTimeoutError(self.port, "write timed out") from exc
        finally:
            view.release()

    async def _writable(self, loop: asyncio.AbstractEventLoop) -> None:
        ready: asyncio.Future[None] = loop.create_future()

        def _done() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(self._fd, _done)
        self._write_waiter = ready
        try:
            await ready
        finally:
            self._write_waiter = None
            if self._fd >= 0:
                loop.remove_writer(self._fd)
        if self._error is not None:
            raise TransportError(self.port, self._error)

    def discard_input(self) -> int:
        """Drop buffered input (after a timeout, before the next request)."""
        n = len(self._rx)
        self._rx.clear()
        return n

    def close(self) -> None:
        """Close the port now. Idempotent; never raises."""
        ser, self._serial = self._serial, None
        if self._error is None:
            self._error = "closed"
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._wake()
        self._fd = -1
        if ser is None:
            return
        with contextlib.suppress(OSError, ValueError, termios.error):
            # Discard pending output first: closing a tty otherwise waits for it
            # to drain (up to closing_wait, 30 s), which a dead adapter never does.
            ser.reset_output_buffer()
        with contextlib.suppress(OSError, ValueError, termios.error):
            ser.close()
        _LOGGER.debug("closed port=%s", self.port)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def run_serial(
    config: SerialTransportConfig,
    session: Callable[[SerialTransport], Awaitable[None]],
    *,
    on_up: Callable[[SerialTransport], None] | None = None,
    on_down: Callable[[str], None] | None = None,
    backoff: Backoff | None = None,
    stable_after_s: float = STABLE_AFTER_S,
) -> None:
    """Keep ``session`` running on an open port until it returns or is cancelled.

    Every failed open and every ``TransportError`` out of ``session`` calls
    ``on_down(reason)``, closes the port and waits the next backoff delay before
    reopening; each successful open calls ``on_up(transport)``. Other exceptions
    close the port and propagate (the supervisor restarts the driver).
    """
    backoff = backoff or Backoff(initial_s=REOPEN_INITIAL_S, cap_s=config.reopen_max_s)
    loop = asyncio.get_running_loop()
    while True:
        transport = SerialTransport(config)
        try:
            await transport.open()
        except TransportError as exc:
            if on_down is not None:
                on_down(exc.reason)
            await asyncio.sleep(next(backoff))
            continue
        opened_at = loop.time()
        try:
            if on_up is not None:
                on_up(transport)
            await session(transport)
            return
        except TransportError as exc:
            _LOGGER.debug("port lost port=%s reason=%s", transport.port, exc.reason)
            if on_down is not None:
                on_down(exc.reason)
        finally:
            transport.close()
        if loop.time() - opened_at >= stable_after_s:
            backoff.reset()
        await asyncio.sleep(next(backoff))
