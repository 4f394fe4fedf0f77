"""Line noise for the simulators: corrupted replies and bursts of garbage.

A lift motor or a long unshielded RS-485 run does two things to a line: it
puts bytes on it that nobody sent, and it flips bits in the frames that are
on it. ``LineNoise`` does both on a simulator's real pty (or TCP stream):
``corrupt_next(n)`` breaks the next ``n`` replies, and ``burst(duration_s)``
writes random garbage every few milliseconds and breaks every reply sent
while it lasts. The simulator passes each outgoing frame through ``garble``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

BURST_EVERY_S = 0.015
"""A garbage chunk every this often during a burst."""
BURST_CHUNK = (3, 12)
"""Bytes per garbage chunk (inclusive range)."""


class LineNoise:
    """The noise on one simulated line; ``write`` puts bytes on the driver's side."""

    def __init__(self, write: Callable[[bytes], None], rng: random.Random | None = None) -> None:
        self._write = write
        self._rng = rng or random.Random()
        self._corrupt = 0
        self._noisy_until = 0.0
        # The burst steps still to come, by a running key: a step lets go of
        # its handle when it fires, so bursts over months do not pile them up.
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._next_step = 0
        self.corrupted = 0
        """Replies broken so far."""
        self.garbage_bytes = 0
        """Garbage bytes written so far."""

    @property
    def noisy(self) -> bool:
        """Whether a burst is on now."""
        return time.monotonic() < self._noisy_until

    def corrupt_next(self, count: int = 1) -> None:
        """Break the next ``count`` replies (one flipped byte each)."""
        self._corrupt += count

    def burst(self, duration_s: float) -> None:
        """Garbage on the line and every reply broken for ``duration_s`` from now."""
        loop = asyncio.get_running_loop()
        self._noisy_until = max(self._noisy_until, time.monotonic() + duration_s)
        steps = max(1, round(duration_s / BURST_EVERY_S))
        for i in range(steps):
            key, self._next_step = self._next_step, self._next_step + 1
            self._timers[key] = loop.call_later(i * BURST_EVERY_S, self._step, key)

    def _step(self, key: int) -> None:
        del self._timers[key]
        self.garbage()

    @property
    def scheduled_steps(self) -> int:
        """Garbage writes of bursts still to come."""
        return len(self._timers)

    def garbage(self, data: bytes | None = None) -> bytes:
        """Write garbage now (random bytes by default); return what was written."""
        if data is None:
            data = self._rng.randbytes(self._rng.randint(*BURST_CHUNK))
        self.garbage_bytes += len(data)
        self._write(data)
        return data

    def garble(self, frame: bytes, *, truncate: bool = False) -> bytes:
        """``frame`` as it arrives through the noise: intact, or with one byte flipped
        (``truncate``: its last byte lost, for a stream whose frames carry no CRC)."""
        if self._corrupt:
            self._corrupt -= 1
        elif not self.noisy:
            return frame
        self.corrupted += 1
        if truncate:
            return frame[:-1]
        index = self._rng.randrange(len(frame))
        flipped = frame[index] ^ (1 << self._rng.randrange(8))
        return frame[:index] + bytes([flipped]) + frame[index + 1 :]

    def cancel(self) -> None:
        """Stop a burst that is still going (simulator stop)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._noisy_until = 0.0
