"""Test doubles for time and for drivers' sinks: broker, ptys and SQLite stay real (DESIGN.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from drivers.base import DeviceState, Reading, ReadingType


class FakeClock:
    """A wall clock that can be stepped and a monotonic clock that only advances."""

    def __init__(self, wall: float = 1_795_000_000.0, mono: float = 1000.0) -> None:
        self._wall = wall
        self._mono = mono

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        """NTP stepping the wall clock; the monotonic clock does not move."""
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        """A real sleep (this clock's time does not move): see ``SteppedClock``."""
        await asyncio.sleep(max(0.0, seconds))


class SteppedClock(FakeClock):
    """A ``FakeClock`` whose ``sleep`` returns only once the test advances time past it.

    Code under test then runs its timing logic (backoff, intervals, frame
    gaps) in fake seconds: the test sees each sleep asked for (``sleeps``,
    ``next_sleep``) and decides when it ends (``advance``).
    """

    def __init__(self, wall: float = 1_795_000_000.0, mono: float = 1000.0) -> None:
        super().__init__(wall, mono)
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._asked = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._asked.set()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.monotonic() + seconds, woken)
        self._sleepers.append(entry)
        try:
            await woken
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        now = self.monotonic()
        for deadline, woken in list(self._sleepers):
            if deadline <= now and not woken.done():
                woken.set_result(None)

    @property
    def sleeping(self) -> list[float]:
        """Seconds left of each sleep still waiting."""
        now = self.monotonic()
        return [deadline - now for deadline, woken in self._sleepers if not woken.done()]

    async def wait_sleeping(self, seconds: float, *, timeout: float = 15.0) -> None:
        """Until some task sleeps ``seconds`` more on this clock (to a nanosecond)."""
        async with asyncio.timeout(timeout):
            while not any(abs(left - seconds) < 1e-9 for left in self.sleeping):
                self._asked.clear()
                await self._asked.wait()

    async def next_sleep(self, *, after: int, timeout: float = 15.0) -> float:
        """The sleep asked for at index ``after`` of ``sleeps`` (waits for it)."""
        async with asyncio.timeout(timeout):
            while len(self.sleeps) <= after:
                self._asked.clear()
                await self._asked.wait()
        return self.sleeps[after]


class FakeClockSync:
    def __init__(self, synced: bool = True) -> None:
        self.synced = synced

    def is_synced(self) -> bool:
        return self.synced


WAIT_S = 15.0
"""Generous: the machine is shared. A bound on waiting for a fact, not an expectation."""


class RecordingSink:
    """A ``ReadingSink`` that keeps every reading; tests wait for the one they expect."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._changed = asyncio.Event()

    def put(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._changed.set()

    def of_type(self, type_: ReadingType) -> list[Reading]:
        return [r for r in self.readings if r.type is type_]

    def states(self, device: str | None = None) -> list[str]:
        """The ``device.status`` states so far, in order (of one device, if given)."""
        return [
            r.data["state"]
            for r in self.of_type(ReadingType.DEVICE_STATUS)
            if device is None or r.device == device
        ]

    async def wait_for(
        self, predicate: Callable[[Reading], bool], *, after: int = 0, timeout: float = WAIT_S
    ) -> Reading:
        """The first reading at index ``after`` or later, past or future, that matches."""
        async with asyncio.timeout(timeout):
            index = after
            while True:
                while index < len(self.readings):
                    if predicate(self.readings[index]):
                        return self.readings[index]
                    index += 1
                self._changed.clear()
                await self._changed.wait()

    async def next(self, predicate: Callable[[Reading], bool]) -> Reading:
        """The first matching reading from now on."""
        return await self.wait_for(predicate, after=len(self.readings))

    async def status(
        self, state: DeviceState | str, *, device: str | None = None, after: int = 0
    ) -> Reading:
        """The first ``device.status`` reading with ``state`` at index ``after`` or later."""
        return await self.wait_for(status_is(state, device=device), after=after)


class CountingSink:
    """A ``ReadingSink`` for load runs: counts readings by type and keeps none."""

    def __init__(self) -> None:
        self.by_type: Counter[ReadingType] = Counter()

    @property
    def count(self) -> int:
        return self.by_type.total()

    def put(self, reading: Reading) -> None:
        self.by_type[reading.type] += 1


def typed(type_: ReadingType, **fields: Any) -> Callable[[Reading], bool]:
    """A predicate: a reading of ``type_`` whose data has these field values."""
    return lambda r: r.type is type_ and all(r.data.get(k) == v for k, v in fields.items())


def status_is(state: DeviceState | str, *, device: str | None = None) -> Callable[[Reading], bool]:
    """A predicate: a ``device.status`` reading with ``state`` (of ``device``, if given)."""
    value = state.value if isinstance(state, DeviceState) else state
    return lambda r: (
        r.type is ReadingType.DEVICE_STATUS
        and r.data["state"] == value
        and (device is None or r.device == device)
    )


async def wait_until(
    condition: Callable[[], bool], timeout: float = WAIT_S, *, every: float = 0.02
) -> None:
    """Poll a fact that has no event of its own (a counter, a simulator's state).

    Raises:
        TimeoutError: it did not hold within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(every)
