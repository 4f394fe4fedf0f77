"""Capped exponential backoff with full jitter (STYLE.md §5, "Backoff lives in one helper").

A pure iterator: it computes delays and never sleeps, so the caller owns the
waiting (bounded, cancellable) and tests need no clock. Attempt ``n`` (from 0)
waits a uniform random time in ``[0, min(cap, initial * factor**n)]`` ("full
jitter", as aiomqtt main's ``_reconnect_loop`` does), so gateways that lost the
same link do not retry in lockstep. ``reset()`` after a success starts again
from ``initial`` (pymodbus' ``reset_delay``).

It lives under ``drivers/transports`` because transports import nothing above
them; the gateway's supervisor reuses it from here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["Backoff"]


class Backoff(Iterator[float]):
    """Endless iterator of jittered delays in seconds."""

    __slots__ = ("_attempt", "_cap", "_factor", "_initial", "_jitter", "_rng")

    def __init__(
        self,
        *,
        initial_s: float = 0.1,
        cap_s: float = 30.0,
        factor: float = 2.0,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or cap_s < initial_s or factor < 1:
            raise ValueError("need 0 < initial_s <= cap_s and factor >= 1")
        self._initial = initial_s
        self._cap = cap_s
        self._factor = factor
        self._jitter = jitter
        # Not for security: spreading retries only needs a decent PRNG.
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """The upper bound of the next delay (before jitter)."""
        # Cap the exponent too, so a long outage cannot overflow the float.
        exponent = min(self._attempt, 64)
        return float(min(self._cap, self._initial * self._factor**exponent))

    def __next__(self) -> float:
        ceiling = self.ceiling()
        self._attempt += 1
        if not self._jitter:
            return ceiling
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay (call after a success)."""
        self._attempt = 0
