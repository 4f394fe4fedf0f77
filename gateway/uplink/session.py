"""The MQTT uplink: the one owner of the broker connection (CONTRACT.md, all topics).

It drains the outbox in batches (results, then alarms, then routine), keeps
several batches in flight, and has the outbox delete a batch only after the
broker's PUBACK for it. It publishes the retained status (and sets the same
topic as the will), subscribes to the commands topic on every connect (brokers
lose sessions, DESIGN.md) and hands each command to the command handler.

On any disconnect it reconnects with capped, fully jittered exponential
backoff, going through ``mqtt.brokers`` in order, always starting again from
the first ("failing over to the next and back"); while connected to a fallback
broker it retries the first every ``failback_s``. TLS fails closed: an
``mqtts://`` broker is only ever reached over verified TLS.

A message the broker refuses (a PUBACK reason code >= 0x80) or that cannot be
published at all (paho refuses the topic) never stops the drain: a batch too
large for the broker (CONNACK Maximum Packet Size, or refused as too large) is
split in halves, and a single message still refused is set aside in the
outbox's dead-letter table, counted, logged once per topic and reason, and
shown in the status. Inbound payloads over ``max_inbound_bytes`` are refused
by the broker (MQTT 5 Maximum Packet Size in CONNECT) and, should one arrive
anyway (MQTT 3.1.1), dropped before they are queued.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.properties import Properties

from drivers.base import Clock, SystemClock
from drivers.transports.backoff import Backoff
from gateway.commands.inbound import InboundCommand
from gateway.config import MqttConfig
from gateway.outbox.store import Batch, Lane, Outbox
from gateway.outbox.wire import BatchEnvelope, status_json
from gateway.timefmt import rfc3339
from gateway.uplink.broker import BrokerUrl, make_tls_context
from gateway.uplink.mqtt_adapter import (
    PUBACK_FAILURE,
    SIZE_REFUSALS,
    PahoAdapter,
    PublishImpossibleError,
    connect_properties,
    publish_packet_size,
    publish_properties,
)

_LOGGER = logging.getLogger(__name__)

GATEWAY_VERSION = "0.1.0"
# A split batch is re-fetched by count; no byte bound beyond the broker's.
_NO_BYTE_BOUND = 1 << 62


class CommandHandler(Protocol):
    def submit(self, inbound: InboundCommand) -> None:
        """Take one message from the commands topic; never blocks."""
        ...


class PublishRefusedError(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code (status, goodbye)."""


# Publish-to-PUBACK latency buckets, seconds: a loopback broker answers in a
# few ms, a mobile link in hundreds; publish_timeout_s (10 s default) caps it.
PUBACK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LatencyHistogram:
    """Observation counts per bucket (``counts[i]``: ``bounds[i-1] < x <= bounds[i]``;
    the last slot is above every bound), plus their sum: what a Prometheus
    histogram needs, without keeping any observation."""

    bounds: tuple[float, ...] = PUBACK_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(PUBACK_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds


@dataclass(slots=True)
class UplinkStats:
    connected: bool = False
    broker: str | None = None
    connects: int = 0
    reconnects: int = 0
    batches_sent: int = 0
    readings_sent: int = 0
    last_puback_latency_s: float | None = None
    commands_received: int = 0
    inbound_oversize: int = 0  # payloads dropped unread for their size
    inbound_failures: int = 0  # messages whose handling raised (a bug; logged)
    set_aside: int = 0  # messages moved to the dead-letter table this run
    splits: int = 0  # batches halved because the broker found them too large
    last_error: str | None = None
    puback_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


class _StopRequestedError(Exception):
    """Raised inside the session to end it for shutdown."""


class Topics:
    def __init__(self, root: str) -> None:
        self.readings = f"{root}/readings"
        self.alarms = f"{root}/alarms"
        self.status = f"{root}/status"
        self.commands = f"{root}/commands"
        self.results = f"{root}/commands/results"


class Uplink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        site: str,
        gateway_id: str,
        topic_root: str,
        client_id: str,
        outbox: Outbox,
        commands: CommandHandler,
        device_states: Callable[[], Mapping[str, Mapping[str, Any]]],
        password: str | None = None,
        tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None),
        max_inbound_bytes: int = 8192 + 1024,
        clock_synced: Callable[[], bool] = lambda: True,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._site = site
        self._gateway_id = gateway_id
        self._client_id = client_id
        self._outbox = outbox
        self._commands = commands
        self._device_states = device_states
        self._password = password
        self._tls_files = tls_files
        self._max_inbound_bytes = max_inbound_bytes
        self._clock_synced = clock_synced
        self._clock = clock or SystemClock()
        self.topics = Topics(topic_root)
        self.started_at = rfc3339(self._clock.wall())
        self.stats = UplinkStats()
        self.subscribed = asyncio.Event()
        """Set while subscribed to the commands topic (tests wait on it)."""
        self._stop = asyncio.Event()
        self._adapter: PahoAdapter | None = None
        self._logged_refusals: set[tuple[str, str]] = set()
        self._envelope_writer = BatchEnvelope(site, gateway_id)

    # --------------------------------------------------------------- public

    async def run(self) -> None:
        """Connect, drain and serve commands until ``shutdown``; reconnect on any drop."""
        backoff = Backoff(
            initial_s=self._config.reconnect_min_s, cap_s=self._config.reconnect_max_s
        )
        while not self._stop.is_set():
            for index, broker in enumerate(self._config.broker_urls):
                if self._stop.is_set():
                    return
                stayed_up = await self._session(broker, fallback=index > 0)
                if stayed_up:
                    backoff.reset()
                    break  # start again from the first broker
            if self._stop.is_set():
                return
            delay = next(backoff)
            _LOGGER.info("mqtt reconnect in delay_s=%.2f", delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def shutdown(self) -> None:
        """Ask the session to publish the offline status and disconnect cleanly."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``shutdown`` was asked for (``run`` returning then is no failure)."""
        return self._stop.is_set()

    # -------------------------------------------------------------- session

    def _client(self, broker: BrokerUrl) -> aiomqtt.Client:
        cfg = self._config
        v5 = cfg.protocol == "5"
        will_payload = self._status_payload("offline", reason="connection_lost", extra=None)
        kwargs: dict[str, Any] = {}
        if v5:
            props = connect_properties()
            props.SessionExpiryInterval = cfg.session_expiry_s
            # The broker then never sends us a larger packet: an oversize
            # command is dropped there, not read, copied and queued here.
            props.MaximumPacketSize = self._max_inbound_bytes
            kwargs["properties"] = props
            kwargs["clean_start"] = False
        else:
            kwargs["clean_session"] = False
        if broker.tls:
            ca, cert, key = self._tls_files
            kwargs["tls_context"] = make_tls_context(ca, cert, key)
        return aiomqtt.Client(
            broker.host,
            broker.port,
            username=cfg.username,
            password=self._password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(self.topics.status, will_payload, qos=1, retain=True),
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            max_inflight_messages=max(20, cfg.max_inflight * 2),
            **kwargs,
        )

    async def _session(self, broker: BrokerUrl, *, fallback: bool) -> bool:
        """One connection's life. Returns True when it connected at all."""
        client = self._client(broker)
        self._adapter = adapter = PahoAdapter(
            client, max_inbound_bytes=self._max_inbound_bytes, on_oversize=self._on_oversize
        )
        connected = False
        try:
            async with client:
                connected = True
                self._on_connected(adapter, broker)
                await client.subscribe(self.topics.commands, qos=1)
                self.subscribed.set()
                await self._publish_status(client, "online")
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._drain(client), name="uplink-drain")
                        group.create_task(self._receive(client), name="uplink-commands")
                        group.create_task(self._status_loop(client), name="uplink-status")
                        group.create_task(self._wait_stop(), name="uplink-stop")
                        if fallback:
                            group.create_task(self._failback_probe(), name="uplink-failback")
                except* _StopRequestedError:
                    # Still connected: say goodbye before the clean DISCONNECT.
                    await self._goodbye(client)
        except* (aiomqtt.MqttError, OSError, TimeoutError) as group_exc:
            error = group_exc.exceptions[0]
            self.stats.last_error = str(error)
            if connected:
                _LOGGER.warning("mqtt connection lost: broker=%s error=%s", broker, error)
            else:
                _LOGGER.warning("mqtt connect failed: broker=%s error=%s", broker, error)
        except* _FailbackError:
            _LOGGER.info("mqtt first broker reachable again; failing back from broker=%s", broker)
        finally:
            self.stats.connected = False
            self.subscribed.clear()
            adapter.fail_pending()
        return connected

    def _on_connected(self, adapter: PahoAdapter, broker: BrokerUrl) -> None:
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.stats.connected = True
        self.stats.broker = str(broker)
        _LOGGER.info(
            "mqtt connected: broker=%s client_id=%s broker_max_packet=%s",
            broker,
            self._client_id,
            adapter.broker_max_packet,
        )
        adapter.set_nodelay()

    def _on_oversize(self, topic: str, size: int) -> None:
        self.stats.inbound_oversize += 1
        _LOGGER.warning(
            "inbound message dropped unread: topic=%s bytes=%d max=%d",
            topic,
            size,
            self._max_inbound_bytes,
        )

    async def _wait_stop(self) -> None:
        await self._stop.wait()
        raise _StopRequestedError

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Clean shutdown: offline status with reason, then DISCONNECT (no will)."""
        try:
            async with asyncio.timeout(2.0):
                await self._publish_status(client, "offline", reason="shutdown")
        except (aiomqtt.MqttError, TimeoutError) as exc:
            _LOGGER.warning("could not publish the offline status at shutdown: %s", exc)

    # ---------------------------------------------------------- publishing

    async def _publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
    ) -> None:
        """Publish at QoS 1 and wait for the PUBACK; raise if the broker refused."""
        assert self._adapter is not None
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        code = await self._adapter.publish(
            topic, data, retain=retain, timeout_s=self._config.publish_timeout_s
        )
        if code >= PUBACK_FAILURE:
            raise PublishRefusedError(f"broker refused publish to {topic}: reason code {code:#x}")

    async def _drain(self, client: aiomqtt.Client) -> None:
        inflight = asyncio.Semaphore(self._config.max_inflight)
        # Fresh cursors each session: whatever was not PUBACKed is sent again.
        cursors = dict.fromkeys(Lane, 0)
        async with asyncio.TaskGroup() as group:
            while True:
                await inflight.acquire()
                batch = await self._next_batch(cursors)
                cursors[batch.lane] = batch.last
                group.create_task(self._send(batch, inflight), name="uplink-send")

    async def _next_batch(self, cursors: dict[Lane, int]) -> Batch:
        cfg = self._config
        while True:
            self._outbox.new_data.clear()
            for lane in Lane:  # results, alarms, routine: alarms jump the queue
                batch = await self._outbox.fetch(
                    lane, cursors[lane], cfg.batch_max_readings, cfg.batch_max_bytes
                )
                if batch is not None:
                    return batch
            await self._outbox.new_data.wait()

    async def _send(self, batch: Batch, inflight: asyncio.Semaphore) -> None:
        try:
            await self._deliver(batch)
        finally:
            inflight.release()

    def _message(self, batch: Batch) -> tuple[str, bytes, Properties | None]:
        """Topic, payload and properties of the MQTT message that carries ``batch``."""
        if batch.lane is not Lane.RESULT:
            topic = self.topics.alarms if batch.lane is Lane.ALARM else self.topics.readings
            return topic, self._envelope(batch).encode("utf-8"), None
        body = batch.bodies[0].encode("utf-8")
        if batch.topic is None:
            return self.topics.results, body, None
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
        try:
            code = await adapter.publish(
                topic, payload, properties=properties, timeout_s=self._config.publish_timeout_s
            )
        except PublishImpossibleError as exc:
            await self._set_aside(batch, topic, f"cannot publish: {exc}")
            return
        if code in SIZE_REFUSALS:
            await self._too_large(batch, f"refused as too large: reason code {code:#x}")
            return
        if code >= PUBACK_FAILURE:
            await self._set_aside(batch, topic, f"refused: reason code {code:#x}")
            return
        self._outbox.ack(batch)
        latency = self._clock.monotonic() - started
        self.stats.batches_sent += 1
        self.stats.readings_sent += batch.count
        self.stats.last_puback_latency_s = latency
        self.stats.puback_latency.observe(latency)

    async def _too_large(self, batch: Batch, why: str) -> None:
        """Send a batch the broker will not take whole as two halves; set one reading aside."""
        if batch.count == 1:
            topic = self._message(batch)[0]
            await self._set_aside(batch, topic, why)
            return
        self.stats.splits += 1
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
            part = await self._outbox.fetch(batch.lane, after, count, _NO_BYTE_BOUND)
            if part is None:
                return
            await self._deliver(part)
            after = part.last

    async def _set_aside(self, batch: Batch, topic: str, reason: str) -> None:
        await self._outbox.set_aside(batch, reason)
        self.stats.set_aside += 1
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
        return self._envelope_writer.write(
            epoch=self._outbox.stats.epoch,
            sent_at=rfc3339(self._clock.wall()),
            bodies=batch.bodies,
        )

    # -------------------------------------------------------------- status

    def _status_payload(
        self, state: str, *, reason: str | None, extra: dict[str, Any] | None
    ) -> str:
        return status_json(
            state=state,
            version=GATEWAY_VERSION,
            started_at=self.started_at,
            at=rfc3339(self._clock.wall()),
            reason=reason,
            extra=extra,
        )

    async def _publish_status(
        self, client: aiomqtt.Client, state: str, *, reason: str | None = None
    ) -> None:
        backlog = self._outbox.stats.backlog
        extra = {
            "backlog": {"routine": backlog[Lane.ROUTINE], "alarm": backlog[Lane.ALARM]},
            "oldest_unsent": await self._outbox.oldest_unsent_ts(),
            "devices": {k: dict(v) for k, v in self._device_states().items()},
            "clock": {"synced": self._clock_synced()},
            "dead_letter": self._outbox.stats.dead_letter,
        }
        payload = self._status_payload(state, reason=reason, extra=extra)
        await self._publish(client, self.topics.status, payload, retain=True)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        """Status at least every ``status_interval_s``, and within a second of a device change."""
        last_states = self._state_summary()
        last_sent = self._clock.monotonic()
        while True:
            await asyncio.sleep(1.0)
            states = self._state_summary()
            if (
                states != last_states
                or self._clock.monotonic() - last_sent >= self._config.status_interval_s
            ):
                await self._publish_status(client, "online")
                last_states = states
                last_sent = self._clock.monotonic()

    def _state_summary(self) -> dict[str, Any]:
        return {k: v.get("state") for k, v in self._device_states().items()}

    # ------------------------------------------------------------ commands

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                self._take(message)
            except Exception:  # one message must never end the session or the daemon
                self.stats.inbound_failures += 1
                _LOGGER.exception("inbound message not handled: topic=%s", message.topic)

    def _take(self, message: aiomqtt.Message) -> None:
        if not message.topic.matches(self.topics.commands):
            return
        self.stats.commands_received += 1
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        self._commands.submit(
            InboundCommand(
                payload=bytes(payload),
                response_topic=response_topic if isinstance(response_topic, str) else None,
                correlation_data=bytes(correlation)
                if isinstance(correlation, bytes | bytearray)
                else None,
                received_mono=self._clock.monotonic(),
            )
        )

    # ------------------------------------------------------------ failback

    async def _failback_probe(self) -> None:
        first = self._config.broker_urls[0]
        while True:
            await asyncio.sleep(self._config.failback_s)
            try:
                async with asyncio.timeout(self._config.connect_timeout_s):
                    _, writer = await asyncio.open_connection(first.host, first.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                continue
            raise _FailbackError


class _FailbackError(Exception):
    """The first broker answers again: end this session to reconnect there."""
