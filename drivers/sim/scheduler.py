"""One scheduler for the simulators: timed actions run in order by one task.

A simulated device does things at given times: a bike's tag read every 100
ms, a band's beacon every second, a reply that reaches the driver when its
last bit would have crossed the wire. ``SimScheduler`` keeps them in one heap
(loop time, then order of scheduling) and runs them from one task, so a
simulator needs no task per event and tests get a deterministic order.

``send`` writes bytes to the line now, or, with ``wire_time``, when their last
bit would arrive at the configured baud rate (10 bits a byte, 8N1): bytes
queue behind each other as on a real line, since ptys ignore the baud rate
(PROTOCOLS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

BITS_PER_BYTE = 10
"""8N1: start bit, 8 data bits, stop bit."""
IDLE_WAKE_S = 1.0
"""The scheduler wakes at least this often."""

Action = bytes | Callable[[], None]
"""Bytes to write to the line, or a callable to run."""


class SimScheduler:
    """The timed actions of one simulator; ``write`` puts bytes on its line."""

    def __init__(
        self,
        name: str,
        write: Callable[[bytes], None],
        *,
        baudrate: int,
        wire_time: bool = False,
    ) -> None:
        self.name = name
        self.baudrate = baudrate
        self.wire_time = wire_time
        self.drained = asyncio.Event()
        """Set whenever nothing is scheduled."""
        self._write = write
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._wire_free = 0.0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def wire_free_at(self) -> float:
        """Loop time at which the last byte sent so far has crossed the wire."""
        return self._wire_free

    def now(self) -> float:
        """The loop time (``start`` first)."""
        assert self._loop is not None, "start() first"
        return self._loop.time()

    def start(self) -> None:
        """Start the task that runs the actions."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the task; actions still scheduled are dropped."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop() itself was cancelled: pass it on

    def at(self, due: float, action: Action) -> None:
        """Run ``action`` (or write its bytes) at loop time ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), action))
        self.drained.clear()
        self._wake.set()

    def send(self, data: bytes) -> None:
        """Put ``data`` on the line: now, or when it has crossed the wire (``wire_time``)."""
        if not self.wire_time or self._loop is None:
            self._write(data)
            return
        start = max(self._loop.time(), self._wire_free)
        self._wire_free = start + self.wire_time_s(len(data))
        # The driver sees the bytes once their last bit has arrived.
        self.at(self._wire_free, data)

    def wire_time_s(self, n_bytes: int) -> float:
        """How long ``n_bytes`` take on the line at the configured baud rate."""
        return n_bytes * BITS_PER_BYTE / self.baudrate

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                _, _, action = heapq.heappop(self._heap)
                if isinstance(action, bytes):
                    self._write(action)
                else:
                    action()
            if not self._heap:
                self.drained.set()
            delay = self._heap[0][0] - now if self._heap else IDLE_WAKE_S
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, IDLE_WAKE_S)):
                        await self._wake.wait()
