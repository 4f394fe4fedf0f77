"""An ingest worker: a competing consumer of the ingest queue, writing to PostgreSQL.

Several workers (processes) consume the same quorum queue; the broker hands
each up to ``prefetch`` unacknowledged messages. A worker groups what it has
received (up to ``group_max`` messages, waiting at most ``group_wait_s`` for
more), commits the group in one transaction, and only then acknowledges it.
While one group commits, the next is gathered and decoded (``prepare``): the
worker's CPU work overlaps the database's instead of alternating with it.
A worker that dies, or loses its broker node or its database, acknowledges
nothing more: the broker gives its unacknowledged messages to another worker,
and deduplication by ``id`` absorbs the second delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import psycopg
from aio_pika.abc import AbstractIncomingMessage

from central import amqp
from central.schema import migrate
from central.store import IngestCounts, IngestStore, PreparedGroup, prepare

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    amqp_urls: Sequence[str]
    dsn: str
    queue: str = amqp.INGEST_QUEUE
    site: str = "*"
    prefetch: int = 2000
    group_max: int = 500
    group_wait_s: float = 0.02
    stats_every_s: float = 10.0
    compact_every_s: float = 60.0  # seq_ranges (central/store.py)


@dataclass(slots=True)
class WorkerStats:
    messages: int = 0
    readings: int = 0
    groups: int = 0
    rejected: int = 0


class IngestWorker:
    def __init__(self, config: IngestConfig) -> None:
        self._config = config
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._last_log = self._last_compact = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop``; reconnect (next node, fresh database link) on any failure."""
        with psycopg.connect(self._config.dsn) as conn:
            migrate(conn)
        node, attempt = 0, 0
        while not self._stop.is_set():
            try:
                node = await self._session(node)
                attempt = 0
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, psycopg.Error) as exc:
                _LOGGER.warning("ingest session ended: error=%r", exc)
                node += 1  # a lost node: start from the next one
                await amqp.sleep_backoff(attempt)
                attempt += 1

    async def _session(self, start: int) -> int:
        conn, node = await amqp.connect(self._config.amqp_urls, start=start)
        db = await psycopg.AsyncConnection.connect(self._config.dsn)
        try:
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=self._config.prefetch)
            queue = await amqp.declare_ingest(
                channel, queue_name=self._config.queue, site=self._config.site
            )
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            closed = asyncio.Event()
            conn.close_callbacks.add(lambda *_: closed.set())
            tag = await queue.consume(inbox.put)
            _LOGGER.info("ingest consuming: node=%d queue=%s", node, self._config.queue)
            store = IngestStore(db)
            await self._loop(inbox, store, closed)
            with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
                await queue.cancel(tag)
            return node
        finally:
            try:
                await conn.close()
            except Exception:  # the node may be gone already: closing is best effort
                _LOGGER.debug("closing the AMQP connection failed", exc_info=True)
            await db.close()

    async def _loop(
        self,
        inbox: asyncio.Queue[AbstractIncomingMessage],
        store: IngestStore,
        closed: asyncio.Event,
    ) -> None:
        # At most one group commits at a time (one database connection); the
        # next one is gathered and prepared meanwhile.
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stop.is_set():
                group = await self._gather(inbox, closed, committing)
                if committing is not None and committing.done():
                    await committing  # raises what the commit raised
                    committing = None
                if closed.is_set():
                    raise ConnectionError("broker connection closed")
                if not group:
                    continue
                prepared = prepare([(m.routing_key or "", m.body) for m in group])
                if committing is not None:
                    await committing
                committing = asyncio.create_task(
                    self._commit(store, prepared, group[-1]), name="ingest-commit"
                )
            if committing is not None:
                await committing  # stopping: finish and acknowledge the last group
        finally:
            if committing is not None and not committing.done():
                committing.cancel()  # the session failed: its messages come back
                await asyncio.gather(committing, return_exceptions=True)

    async def _commit(
        self, store: IngestStore, prepared: PreparedGroup, last: AbstractIncomingMessage
    ) -> None:
        counts = await store.write(prepared)
        # Everything before the last delivery tag on this channel is in this
        # group or was acknowledged already: one ack covers the group.
        await last.ack(multiple=True)
        self._count(counts)
        if time.monotonic() - self._last_compact >= self._config.compact_every_s:
            self._last_compact = time.monotonic()
            await store.compact_ranges()

    def _count(self, counts: IngestCounts) -> None:
        self.stats.messages += counts.messages
        self.stats.readings += counts.readings
        self.stats.rejected += counts.rejected
        self.stats.groups += 1
        if time.monotonic() - self._last_log >= self._config.stats_every_s:
            self._last_log = self._last_compact = time.monotonic()
            _LOGGER.info(
                "ingest: messages=%d readings=%d groups=%d rejected=%d",
                self.stats.messages,
                self.stats.readings,
                self.stats.groups,
                self.stats.rejected,
            )

    async def _gather(
        self,
        inbox: asyncio.Queue[AbstractIncomingMessage],
        closed: asyncio.Event,
        committing: asyncio.Task[None] | None,
    ) -> list[AbstractIncomingMessage]:
        """The next group; empty when the session ends or the running commit does.

        A commit that fails must end the wait: its messages stay unacknowledged,
        so with the prefetch used up no other message would come.
        """
        cfg = self._config
        first = asyncio.ensure_future(inbox.get())
        ended = asyncio.ensure_future(closed.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        waits: set[asyncio.Future[Any]] = {first, ended, stop}
        if committing is not None:
            waits.add(committing)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ended, stop):
                task.cancel()
        if not first.done():
            first.cancel()
            return []
        group = [first.result()]
        deadline = time.monotonic() + cfg.group_wait_s
        while len(group) < cfg.group_max:
            if inbox.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        group.append(await inbox.get())
                except TimeoutError:
                    break
            else:
                group.append(inbox.get_nowait())
        return group
