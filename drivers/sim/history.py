"""What a simulator recorded, bounded: a count of everything and the latest few kept.

Simulators run for months under ``scripts/run`` (``simulate: true`` devices), so
a plain list of every pulse or frame would grow without end. ``History`` keeps
the usual list idiom of the tests and benchmarks working however long the run:
``len()`` is the number ever recorded and ``history[i]`` the i-th ever (0-based)
while it is still kept, so ``seen = len(h)`` ... ``h[seen]`` reads the next
record. Iteration and ``bool()`` cover what is kept / ever recorded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

DEFAULT_KEEP = 1000
"""Records kept per history: far more than any test or benchmark looks back on."""


T = TypeVar("T")


class History(Generic[T]):
    """Everything recorded, counted; the newest ``keep`` records kept, oldest dropped."""

    __slots__ = ("_count", "_kept")

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep at least one record")
        self._kept: deque[T] = deque(maxlen=keep)
        self._count = 0

    def append(self, item: T) -> None:
        self._kept.append(item)
        self._count += 1

    def __len__(self) -> int:
        """How many records were ever made (not how many are kept)."""
        return self._count

    def __iter__(self) -> Iterator[T]:
        """The kept records, oldest first."""
        return iter(self._kept)

    def __getitem__(self, index: int) -> T:
        """The ``index``-th record ever made (negative: from the newest).

        Raises:
            IndexError: not made yet, or no longer kept.
        """
        if index < 0:
            index += self._count
        first = self._count - len(self._kept)
        if not first <= index < self._count:
            raise IndexError(f"record {index} is not kept (kept: {first}..{self._count - 1})")
        return self._kept[index - first]

    @property
    def kept(self) -> int:
        """How many records are kept now (at most ``keep``)."""
        return len(self._kept)

    def __repr__(self) -> str:
        return f"History(count={self._count}, kept={len(self._kept)})"
