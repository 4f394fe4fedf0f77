"""The time a transport waits on, injected so tests drive it instead of sleeping.

``Timer`` is the small protocol the Modbus bus takes (STYLE.md §5, "Inject a
clock object so tests control time"): the monotonic clock its deadlines are
measured on (the frame gap, a request's retry budget, slave probing) and the
sleep it waits with (the frame gap, reconnect backoff). Transports import
nothing above them, so the protocol lives here; ``drivers.base.SystemClock``
and the gateway's clock satisfy it too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

SELECT_GRANULARITY_S = 0.001
"""asyncio's epoll selector waits in whole milliseconds (rounded up)."""


class Timer(Protocol):
    def monotonic(self) -> float:
        """Seconds on the system-wide monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` (at once when not positive)."""
        ...


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``, to a fraction of a millisecond.

    ``asyncio.sleep(0.00365)`` ends 4.2-4.5 ms later: 15-25 % of the RTU frame
    gap at 9600 baud, every transaction. This sleeps on the loop to within
    ``SELECT_GRANULARITY_S`` of the deadline and the rest (under 1 ms, well
    inside STYLE.md's "a few ms") with a blocking ``time.sleep``.
    """
    remaining = deadline - time.monotonic()
    if remaining > SELECT_GRANULARITY_S:
        await asyncio.sleep(remaining - SELECT_GRANULARITY_S)
        remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)  # noqa: ASYNC251 -- bounded by SELECT_GRANULARITY_S


class SystemTimer:
    """The real monotonic clock and a sleep accurate to a fraction of a millisecond."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await sleep_until(time.monotonic() + seconds)
