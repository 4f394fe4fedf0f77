"""A simulator's ambient life: one named task, started with it and cancelled at stop.

In ambient mode a simulator plays residents, passers-by or bikes so the
shipped configuration has something to report. The Modbus simulators and the
networked controller run that as one task, which this helper starts, paces
(``pause``: the period jittered +-40 %, so devices do not beat in step) and
cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from typing import Any

JITTER = (0.6, 1.4)
"""Ambient events come at their period times a factor drawn from this range."""


class Ambient:
    """The ambient task of one simulator (none when ``enabled`` is False)."""

    def __init__(
        self,
        name: str,
        life: Callable[[], Coroutine[Any, Any, None]],
        *,
        enabled: bool,
        rng: random.Random,
    ) -> None:
        self.enabled = enabled
        self._name = name
        self._life = life
        self._rng = rng
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task (when enabled), in the running loop."""
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._life(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def pause(self, period_s: float) -> None:
        """Wait about ``period_s`` before the next ambient event."""
        await asyncio.sleep(period_s * self._rng.uniform(*JITTER))
