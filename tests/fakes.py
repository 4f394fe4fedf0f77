"""Test doubles for time only: the broker, ptys and SQLite stay real (DESIGN.md)."""

from __future__ import annotations


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


class FakeClockSync:
    def __init__(self, synced: bool = True) -> None:
        self.synced = synced

    def is_synced(self) -> bool:
        return self.synced
