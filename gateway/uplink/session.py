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

Longer than 400 lines because the connection's life (connect, failover and failback,
batches in flight, PUBACKs, status, commands in) is one state machine owned by one task.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.transports.backoff import Backoff
from gateway.config import BrokerUrl, MqttConfig
from gateway.outbox.store import Batch, Lane, Outbox
from gateway.timefmt import rfc3339
from gateway.version import GATEWAY_VERSION

_LOGGER = logging.getLogger(__name__)

PUBACK_FAILURE = 0x80  # MQTT 5: reason codes >= 0x80 are failures


class CommandHandler(Protocol):
    def submit(
        self,
        payload: bytes,
        *,
        response_topic: str | None,
        correlation_data: bytes | None,
        received_mono: float,
    ) -> None:
        """Take one message from the commands topic; never blocks."""
        ...


class AccessHandler(Protocol):
    """The access-list side (``gateway.access.processor``): messages in, state out."""

    state_changed: asyncio.Event

    async def receive(self, payload: bytes) -> None:
        """Take one message from the access topic; never waits (commands share the loop)."""
        ...

    def state_json(self) -> str:
        """The retained ``{root}/access/state`` message, as of now."""
        ...

    def status(self) -> dict[str, Any]:
        """``access`` of the status message."""
        ...


class PublishRefusedError(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code."""


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
        self.access = f"{root}/access"
        self.access_state = f"{root}/access/state"


def set_nodelay(client: aiomqtt.Client) -> None:
    """Send small MQTT packets at once instead of waiting out Nagle's algorithm."""
    sock = client._client.socket()
    if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (a unix socket): nothing to do
        _LOGGER.debug("TCP_NODELAY not set: %s", exc)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho is untyped here


def make_tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A verifying TLS context: certificate chain and host name always checked."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


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
        access: AccessHandler | None = None,
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
        self._access = access
        self.topics = Topics(topic_root)
        self.started_at = rfc3339(time.time())
        self.stats = UplinkStats()
        self._stop = asyncio.Event()
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._batch_prefix = (
            f'{{"v":1,"site":{json.dumps(site)},"gateway":{json.dumps(gateway_id)},"epoch":"'
        )

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

    # -------------------------------------------------------------- session

    def _client(self, broker: BrokerUrl) -> aiomqtt.Client:
        cfg = self._config
        v5 = cfg.protocol == "5"
        will_payload = self._status_payload("offline", reason="connection_lost", extra=None)
        kwargs: dict[str, Any] = {}
        if v5:
            props = _properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
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
        connected = False
        try:
            async with client:
                connected = True
                self._on_connected(client, broker)
                await client.subscribe(self.topics.commands, qos=1)
                if self._access is not None:
                    await client.subscribe(self.topics.access, qos=1)
                await self._publish_status(client, "online")
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._drain(client), name="uplink-drain")
                        group.create_task(self._receive(client), name="uplink-commands")
                        group.create_task(self._status_loop(client), name="uplink-status")
                        group.create_task(self._wait_stop(), name="uplink-stop")
                        if self._access is not None:
                            group.create_task(
                                self._access_state_loop(client, self._access),
                                name="uplink-access-state",
                            )
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
            self._fail_pending_acks()
        return connected

    def _on_connected(self, client: aiomqtt.Client, broker: BrokerUrl) -> None:
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.stats.connected = True
        self.stats.broker = str(broker)
        _LOGGER.info("mqtt connected: broker=%s client_id=%s", broker, self._client_id)
        # paho never sets TCP_NODELAY: a small result published right after our
        # PUBACK of the command would wait for the broker's delayed ACK (~40 ms).
        set_nodelay(client)
        # aiomqtt 2.5.1 ignores the PUBACK reason code; a broker refusing a
        # publish (MQTT 5, e.g. not authorised) must not make us delete readings.
        paho = client._client
        original = paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            future = self._acks.pop(mid, None)
            if future is not None and not future.done():
                code = int(getattr(reason, "value", 0) or 0)
                future.set_result(code)
            if original is not None:
                cast(Any, original)(c, userdata, mid, reason, props)

        paho.on_publish = on_publish

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

    def _fail_pending_acks(self) -> None:
        for future in self._acks.values():
            if not future.done():
                future.cancel()
        self._acks.clear()

    # ---------------------------------------------------------- publishing

    async def _publish(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish at QoS 1 and wait for the PUBACK; raise if the broker refused."""
        info = client._client.publish(topic, payload, 1, retain, properties)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            async with asyncio.timeout(self._config.publish_timeout_s):
                code = await future
        finally:
            self._acks.pop(info.mid, None)
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
                group.create_task(self._send(client, batch, inflight), name="uplink-send")

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

    async def _send(
        self, client: aiomqtt.Client, batch: Batch, inflight: asyncio.Semaphore
    ) -> None:
        try:
            started = time.monotonic()
            if batch.lane is Lane.RESULT:
                await self._send_result(client, batch)
            else:
                topic = self.topics.alarms if batch.lane is Lane.ALARM else self.topics.readings
                await self._publish(client, topic, self._envelope(batch))
            self._outbox.ack(batch)
            latency = time.monotonic() - started
            self.stats.batches_sent += 1
            self.stats.readings_sent += batch.count
            self.stats.last_puback_latency_s = latency
            self.stats.puback_latency.observe(latency)
        finally:
            inflight.release()

    async def _send_result(self, client: aiomqtt.Client, batch: Batch) -> None:
        body = batch.bodies[0]
        if batch.topic is None:
            await self._publish(client, self.topics.results, body)
            return
        properties = None
        if self._config.protocol == "5" and batch.correlation is not None:
            properties = _properties(PacketTypes.PUBLISH)
            properties.CorrelationData = batch.correlation
        await self._publish(client, batch.topic, body, properties=properties)

    def _envelope(self, batch: Batch) -> str:
        return (
            f'{self._batch_prefix}{self._outbox.stats.epoch}","sent_at":"{rfc3339(time.time())}",'
            f'"readings":[{",".join(batch.bodies)}]}}'
        )

    # -------------------------------------------------------------- status

    def _status_payload(
        self, state: str, *, reason: str | None, extra: dict[str, Any] | None
    ) -> str:
        status: dict[str, Any] = {
            "v": 1,
            "state": state,
            "version": GATEWAY_VERSION,
            "started_at": self.started_at,
            "at": rfc3339(time.time()),
        }
        if reason is not None:
            status["reason"] = reason
        if extra:
            status.update(extra)
        return json.dumps(status, separators=(",", ":"))

    async def _publish_status(
        self, client: aiomqtt.Client, state: str, *, reason: str | None = None
    ) -> None:
        backlog = self._outbox.stats.backlog
        extra = {
            "backlog": {"routine": backlog[Lane.ROUTINE], "alarm": backlog[Lane.ALARM]},
            "oldest_unsent": await self._outbox.oldest_unsent_ts(),
            "devices": {k: dict(v) for k, v in self._device_states().items()},
            # CONTRACT 1.1: the list the gateway decides with, null for a local file.
            "access": self._access.status() if self._access is not None else None,
        }
        payload = self._status_payload(state, reason=reason, extra=extra)
        await self._publish(client, self.topics.status, payload, retain=True)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        """Status at least every ``status_interval_s``, and within a second of a device change."""
        last_states = self._state_summary()
        last_sent = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            states = self._state_summary()
            if (
                states != last_states
                or time.monotonic() - last_sent >= self._config.status_interval_s
            ):
                await self._publish_status(client, "online")
                last_states = states
                last_sent = time.monotonic()

    def _state_summary(self) -> dict[str, Any]:
        # Every fact of a device entry but last_seen (which moves with every
        # poll): a state change or a door's new mode is published at once.
        summary: dict[str, Any] = {
            k: {name: value for name, value in v.items() if name != "last_seen"}
            for k, v in self._device_states().items()
        }
        if self._access is not None:
            summary[self.topics.access] = self._access.status()
        return summary

    async def _access_state_loop(self, client: aiomqtt.Client, access: AccessHandler) -> None:
        """The retained access state on connect and whenever it changed."""
        while True:
            access.state_changed.clear()
            await self._publish(client, self.topics.access_state, access.state_json(), retain=True)
            await access.state_changed.wait()

    # ------------------------------------------------------------ commands

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self._access is not None and message.topic.matches(self.topics.access):
                await self._access.receive(_payload_bytes(message.payload))
                continue
            if not message.topic.matches(self.topics.commands):
                continue
            self.stats.commands_received += 1
            props = message.properties
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            self._commands.submit(
                _payload_bytes(message.payload),
                response_topic=response_topic,
                correlation_data=correlation,
                received_mono=time.monotonic(),
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


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class _FailbackError(Exception):
    """The first broker answers again: end this session to reconnect there."""
