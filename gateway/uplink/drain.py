"""The drain: the outbox's lanes to MQTT messages, one connection at a time.

Batches go out in lane order (results, alarms, routine), several in flight,
each deleted from the outbox only after its PUBACK. A message the broker
refuses (PUBACK reason code >= 0x80) or that cannot be published at all
(paho refuses the topic) never stops the drain: a batch too large for the
broker (CONNACK Maximum Packet Size, or refused as too large) is split in
halves, and a single message still refused is set aside in the outbox's
dead-letter table, counted, and logged once per topic and reason (issue 9).

Some refusals come as a dropped connection instead: a broker that cannot
announce its limit (MQTT 3.1.1) disconnects a client whose packet is too
large, and mosquitto's ``message_size_limit`` answers with a reason code MQTT 5
does not allow in a PUBACK, on which paho drops the connection. So the drain
also remembers which batches were in flight when a connection was lost: the
next connection sends one batch at a time until those are through (so a loss
points at one batch), a batch in flight at a loss is split like one refused
as too large (and later connections send at most half from its first row),
and a single reading in flight at ``SET_ASIDE_AFTER_LOSSES`` consecutive
losses is set aside. On a merely flaky link this costs smaller batches and
one-at-a-time sending for a while; a reading is set aside only when four
connections in a row died with it in flight, and a batch PUBACKed is
forgotten.

The result lane is not in the outbox: results live in the command store,
committed with the command's finished mark (``gateway.commands.results``).
The drain reads and acknowledges that lane through the same ``Lane`` interface
(``LaneSource``), so results keep their place ahead of alarms; results the
store could not write come from memory on that lane, first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Protocol

from paho.mqtt.properties import Properties

from drivers.base import Clock
from gateway.config import MqttConfig
from gateway.outbox.store import BEFORE_ANY_ROW, Batch, Lane, Outbox, first_of
from gateway.outbox.wire import BatchEnvelope
from gateway.timefmt import rfc3339
from gateway.uplink.broker import Topics
from gateway.uplink.mqtt_adapter import (
    PUBACK_FAILURE,
    SIZE_REFUSALS,
    PahoAdapter,
    PublishImpossibleError,
    publish_packet_size,
    publish_properties,
)
from gateway.uplink.stats import UplinkStats

_LOGGER = logging.getLogger(__name__)

# A split batch is re-fetched by count; no byte bound beyond the broker's.
_NO_BYTE_BOUND = 1 << 62
SPLIT_AFTER_LOSSES = 1
ENVELOPE_ROOM_BYTES = 1024  # envelope, topic and MQTT header, within the broker's limit
SET_ASIDE_AFTER_LOSSES = 4

_BatchKey = tuple[Lane, int, int]


class LaneSource(Protocol):
    """Where a lane's batches come from: the outbox, or the command store's results."""

    new_data: asyncio.Event

    async def fetch(
        self, lane: Lane, after: int, max_count: int, max_bytes: int
    ) -> Batch | None: ...

    def ack(self, batch: Batch) -> None: ...


class Drain:
    """Sends the outbox; ``run`` once per connection (cursors start afresh each time)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        outbox: Outbox,
        results: LaneSource | None,
        topics: Topics,
        stats: UplinkStats,
        clock: Clock,
        site: str,
        gateway_id: str,
    ) -> None:
        self._config = config
        self._outbox = outbox
        # In Lane order (results, alarms, routine): the drain's priority.
        self._sources: dict[Lane, LaneSource] = {}
        for lane in Lane:
            source = outbox if lane is not Lane.RESULT else results
            if source is not None:
                self._sources[lane] = source
        self._topics = topics
        self._stats = stats
        self._clock = clock
        self._writer = BatchEnvelope(site, gateway_id)
        self._adapter: PahoAdapter | None = None
        self._logged_refusals: set[tuple[str, str]] = set()
        self._in_flight: set[_BatchKey] = set()  # published, no PUBACK yet
        self._suspects: Counter[_BatchKey] = Counter()  # consecutive losses in flight
        # (lane, first seq) -> the most readings to send from there: what the
        # losses taught us, kept across connections until that batch is acked.
        self._caps: dict[tuple[Lane, int], int] = {}

    def connection_lost(self) -> None:
        """The connection dropped: count it against every batch that was in flight."""
        self._suspects = Counter({key: self._suspects[key] + 1 for key in self._in_flight})
        self._in_flight.clear()

    async def run(self, adapter: PahoAdapter) -> None:
        """Send the lanes until cancelled (the session ends), one connection's worth."""
        self._adapter = adapter
        # After a loss with batches in flight, one at a time until the suspects
        # are through: then a loss points at exactly one batch.
        inflight = asyncio.Semaphore(1 if self._suspects else self._config.max_inflight)
        # Fresh cursors each session: whatever was not PUBACKed is sent again
        # (results held in memory too: their ids are negative).
        cursors = dict.fromkeys(Lane, BEFORE_ANY_ROW)
        async with asyncio.TaskGroup() as group:
            while True:
                await inflight.acquire()
                batch = await self._next_batch(cursors)
                # Never back: a result held mid-session comes with an id below
                # the cursor, and the rows already sent must not come again.
                cursors[batch.lane] = max(cursors[batch.lane], batch.last)
                group.create_task(self._send(batch, inflight), name="uplink-send")

    def _max_bytes(self) -> int:
        """Bytes of readings per batch: the config's bound, and the broker's if it said."""
        bound = self._config.batch_max_bytes
        announced = None if self._adapter is None else self._adapter.broker_max_packet
        if announced is not None:  # leave room for the envelope and the topic
            bound = min(bound, max(1, announced - ENVELOPE_ROOM_BYTES))
        return bound

    async def _next_batch(self, cursors: dict[Lane, int]) -> Batch:
        cfg = self._config
        sources = self._sources
        while True:
            for source in set(sources.values()):
                source.new_data.clear()
            max_bytes = self._max_bytes()
            for lane, source in sources.items():  # alarms jump the routine queue
                batch = await source.fetch(lane, cursors[lane], cfg.batch_max_readings, max_bytes)
                cap = None if batch is None else self._caps.get((lane, batch.first))
                if batch is not None and cap is not None and batch.count > cap:
                    batch = await source.fetch(lane, cursors[lane], cap, _NO_BYTE_BOUND)
                if batch is not None:
                    return batch
            await first_of(*(source.new_data for source in set(sources.values())))

    async def _send(self, batch: Batch, inflight: asyncio.Semaphore) -> None:
        try:
            await self._deliver(batch)
        finally:
            inflight.release()

    def _message(self, batch: Batch) -> tuple[str, bytes, Properties | None]:
        """Topic, payload and properties of the MQTT message that carries ``batch``."""
        if batch.lane is not Lane.RESULT:
            topic = self._topics.alarms if batch.lane is Lane.ALARM else self._topics.readings
            return topic, self._envelope(batch).encode("utf-8"), None
        body = batch.bodies[0].encode("utf-8")
        if batch.topic is None:
            return self._topics.results, body, None
        properties = None
        if self._config.protocol == "5" and batch.correlation is not None:
            properties = publish_properties()
            properties.CorrelationData = batch.correlation
        return batch.topic, body, properties

    async def _deliver(self, batch: Batch) -> None:
        """Publish one batch until the broker takes it, or split it, or set it aside."""
        assert self._adapter is not None
        adapter = self._adapter
        started = self._clock.monotonic()
        topic, payload, properties = self._message(batch)
        limit = adapter.broker_max_packet
        if limit is not None:
            size = publish_packet_size(topic, payload, properties, v5=self._config.protocol == "5")
            if size > limit:
                await self._too_large(batch, f"packet of {size} bytes > broker maximum {limit}")
                return
        key = (batch.lane, batch.first, batch.last)
        losses = self._suspects[key]
        if losses >= SPLIT_AFTER_LOSSES and (batch.count > 1 or losses >= SET_ASIDE_AFTER_LOSSES):
            del self._suspects[key]
            if batch.count > 1:  # the next connections send at most half from here
                self._caps[batch.lane, batch.first] = batch.count // 2
            await self._too_large(batch, f"the connection dropped {losses} times with it in flight")
            return
        self._in_flight.add(key)
        try:
            code = await adapter.publish(
                topic, payload, properties=properties, timeout_s=self._config.publish_timeout_s
            )
        except PublishImpossibleError as exc:
            self._in_flight.discard(key)
            await self._set_aside(batch, topic, f"cannot publish: {exc}")
            return
        # Answered (even with a refusal): the connection survived this batch.
        self._in_flight.discard(key)
        self._suspects.pop(key, None)
        if code in SIZE_REFUSALS:
            await self._too_large(batch, f"refused as too large: reason code {code:#x}")
            return
        if code >= PUBACK_FAILURE:
            await self._set_aside(batch, topic, f"refused: reason code {code:#x}")
            return
        self._sources[batch.lane].ack(batch)
        self._caps.pop((batch.lane, batch.first), None)
        latency = self._clock.monotonic() - started
        self._stats.batches_sent += 1
        self._stats.readings_sent += batch.count
        self._stats.last_puback_latency_s = latency
        self._stats.puback_latency.observe(latency)

    async def _too_large(self, batch: Batch, why: str) -> None:
        """Send a batch the broker will not take whole as two halves; set one reading aside."""
        if batch.count == 1:
            topic = self._message(batch)[0]
            await self._set_aside(batch, topic, why)
            return
        self._stats.splits += 1
        _LOGGER.info(
            "batch too large for the broker, splitting: lane=%s readings=%d %s",
            batch.lane,
            batch.count,
            why,
        )
        # The batch's rows are still in the lane, and nothing newer sorts before
        # its last seq: re-fetching by count from just before it yields exactly them.
        half = batch.count // 2
        after = batch.first - 1
        for count in (half, batch.count - half):
            part = await self._sources[batch.lane].fetch(batch.lane, after, count, _NO_BYTE_BOUND)
            if part is None:
                return
            await self._deliver(part)
            after = part.last

    async def _set_aside(self, batch: Batch, topic: str, reason: str) -> None:
        await self._outbox.set_aside(batch, reason)
        if batch.lane is Lane.RESULT:  # kept in the outbox's dead-letter table now
            self._sources[batch.lane].ack(batch)
        self._stats.set_aside += 1
        key = (topic, reason)
        if key not in self._logged_refusals:  # once per topic and reason, not per row
            self._logged_refusals.add(key)
            _LOGGER.error(
                "message set aside in the dead-letter table: lane=%s topic=%s readings=%d "
                "reason=%s (further ones like it are counted, not logged)",
                batch.lane,
                topic,
                batch.count,
                reason,
            )

    def _envelope(self, batch: Batch) -> str:
        return self._writer.write(
            epoch=self._outbox.stats.epoch,
            sent_at=rfc3339(self._clock.wall()),
            bodies=batch.bodies,
        )
