"""The lane between the uplink and the command worker.

``submit`` is called by the uplink for each message and never blocks. It runs
the checks up to the signature at once (``CommandProcessor.screen``: a parse
and at most one Ed25519 verification, no I/O), so a message that fails them
never takes a place in the queue: only authentic commands wait there, and a
flood of garbage cannot push a real ``door.open`` out (issue 9, item 3).

``run`` is the worker: it executes the queued commands one at a time and,
every ``report_interval_s``, has the processor report the unverified messages
it counted; a third task syncs the store for results queued without a sync of
their own (``CommandProcessor.run_syncs``), and a fourth retries the finished
marks the store failed to write (``CommandProcessor.run_finish_retries``).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.commands.inbound import InboundCommand
from gateway.commands.model import CommandMessage
from gateway.commands.processor import CommandProcessor

_LOGGER = logging.getLogger(__name__)

COMMAND_QUEUE_MAX = 1000
UNVERIFIED_REPORT_S = 60.0


class CommandQueue:
    """Takes commands from the uplink without blocking it; one worker executes them."""

    def __init__(
        self,
        processor: CommandProcessor,
        *,
        maxsize: int = COMMAND_QUEUE_MAX,
        report_interval_s: float = UNVERIFIED_REPORT_S,
    ) -> None:
        self._processor = processor
        self._queue: asyncio.Queue[tuple[InboundCommand, CommandMessage]] = asyncio.Queue(maxsize)
        self._report_interval_s = report_interval_s
        self.overflowed = 0

    def submit(self, inbound: InboundCommand) -> None:
        message = self._processor.screen(inbound)
        if message is None:
            return  # unverified: counted by the processor, never queued
        try:
            self._queue.put_nowait((inbound, message))
        except asyncio.QueueFull:
            # Only signed commands get here: the platform sees no result and retries.
            self.overflowed += 1
            _LOGGER.error("command queue full, command dropped: overflowed=%d", self.overflowed)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._work(), name="commands-worker")
            group.create_task(self._report(), name="commands-report")
            group.create_task(self._processor.run_syncs(), name="commands-sync")
            group.create_task(self._processor.run_finish_retries(), name="commands-finish-retry")

    async def _work(self) -> None:
        while True:
            inbound, message = await self._queue.get()
            try:
                await self._processor.handle(inbound, message)
            except Exception:  # one bad command must not stop the next
                _LOGGER.exception("command handling failed")

    async def _report(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._report_interval_s)
                self._processor.report_unverified()
        finally:
            self._processor.report_unverified()  # what was counted before a shutdown
