"""Requests to one UHPPOTE controller, and the socket its pushed events arrive on.

The frames are the ``uhppoted`` library's (its async API, ``UhppoteAsync``:
one fresh UDP socket per request, so a late reply can never be taken for the
answer to the next one). What this module adds, per PROTOCOL-UHPPOTE.md §1 and
§8:

- requests to one controller are serialised (correlation is by function code
  and serial only);
- there are no error replies, so every failure is silence: each request has a
  timeout, is retried once, and then raises ``TransportTimeoutError`` saying
  "no reply (wrong serial, bad frame or unreachable)";
- a reply from another serial is not an answer;
- the event listener decodes 64-byte ``17 20`` and ``19 20`` frames (v6.62
  firmware) with the library's ``decode.event`` and hands them on; anything
  else is counted and dropped. The library's own ``listen`` starts a detached
  task per event and swallows errors, hence this small protocol instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from uhppoted import decode
from uhppoted.uhppote_async import UhppoteAsync

from drivers.transports.errors import TransportError, TransportTimeoutError

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

NO_REPLY = "no reply (wrong serial, bad frame or unreachable)"
DEFAULT_PORT = 60000
FRAME_BYTES = 64


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` to a pair."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host, int(port)


def _raise_if_cancelling() -> None:
    # The library waits with asyncio.wait_for, which on Python 3.11 loses a
    # cancellation that lands as the reply arrives (cpython gh-86296): the
    # task is left "cancelling" but runs on, and would never stop.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class UhppoteLink:
    """Request/response with one controller (by serial, at an address or by broadcast)."""

    def __init__(
        self,
        serial: int,
        *,
        address: str | None,
        broadcast: str,
        timeout_s: float,
        retries: int = 1,
    ) -> None:
        self.serial = serial
        self.address = address
        self._api = UhppoteAsync(bind="0.0.0.0", broadcast=broadcast)
        self._broadcast = broadcast
        self._timeout_s = timeout_s
        self._retries = retries
        self._lock = asyncio.Lock()
        self.frames_sent = 0

    @property
    def where(self) -> str:
        return f"uhppote {self.serial}@{self.address or 'broadcast'}"

    def _target(self) -> tuple[int, str | None, str]:
        return (self.serial, self.address, "udp")

    async def call(self, name: str, *args: Any) -> Any:
        """``UhppoteAsync.<name>(controller, *args)``; the decoded reply.

        Raises:
            TransportTimeoutError: no reply after the retries.
            TransportError: a reply from another controller, or a socket error.
        """
        method: Callable[..., Awaitable[Any]] = getattr(self._api, name)
        async with self._lock:
            for attempt in range(self._retries + 1):
                self.frames_sent += 1
                try:
                    reply = await method(self._target(), *args, timeout=self._timeout_s)
                except TimeoutError:
                    if attempt < self._retries:
                        continue
                    raise TransportTimeoutError(self.where, f"{name}: {NO_REPLY}") from None
                except (OSError, ValueError) as exc:
                    raise TransportError(self.where, f"{name}: {exc}") from exc
                finally:
                    _raise_if_cancelling()
                if reply is not None and getattr(reply, "controller", self.serial) != self.serial:
                    raise TransportError(self.where, f"{name}: reply from {reply.controller}")
                return reply
        raise AssertionError("unreachable")

    async def discover(self) -> str | None:
        """Broadcast get-device; the ``ip:60000`` of the controller with our serial, if any."""
        try:
            found = await self._api.get_all_controllers(timeout=self._timeout_s)
        except (OSError, RuntimeError) as exc:
            raise TransportError(self.where, f"discovery: {exc}") from exc
        # Controllers listen on the port the broadcast went to (60000 by default).
        port = split_address(self._broadcast, DEFAULT_PORT)[1]
        for reply in found:
            if reply.controller == self.serial:
                return f"{reply.ip_address}:{port}"
        return None


class _EventProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self._on_frame = on_frame

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._on_frame(data)


class EventListener:
    """The UDP socket controllers push events to; decoded events go to ``on_event``."""

    def __init__(self, listen: str, on_event: Callable[[Any], None]) -> None:
        self._listen = split_address(listen, 60001)
        self._on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self.rejected = 0

    async def open(self) -> tuple[str, int]:
        """Bind; return the address actually bound (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _EventProtocol(self._frame), local_addr=self._listen
            )
        except OSError as exc:
            raise TransportError(f"listen {self._listen}", str(exc)) from exc
        self._transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _frame(self, data: bytes) -> None:
        if len(data) != FRAME_BYTES:
            self.rejected += 1
            return
        try:
            event = decode.event(data)
        except ValueError:
            self.rejected += 1
            return
        self._on_event(event)
