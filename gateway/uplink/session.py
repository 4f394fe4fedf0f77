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

Sending the lanes, including what happens to a message the broker refuses,
is ``gateway.uplink.drain``. Inbound payloads over ``max_inbound_bytes`` are refused
by the broker (MQTT 5 Maximum Packet Size in CONNECT) and, should one arrive
anyway (MQTT 3.1.1), dropped before they are queued.

Longer than 400 lines because the connect, failover and failback loop, the
status and access-state publishing and the inbound dispatch share one client
and one session's lifetime; draining and the statistics are already apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from drivers.base import SystemClock
from drivers.transports.backoff import Backoff
from gateway.commands.inbound import InboundCommand
from gateway.config import MqttConfig
from gateway.outbox.store import Lane, Outbox
from gateway.outbox.wire import status_json
from gateway.runtime.clock import SleepingClock
from gateway.timefmt import rfc3339
from gateway.uplink.broker import BrokerUrl, Topics, make_tls_context
from gateway.uplink.drain import Drain, LaneSource
from gateway.uplink.inbound_queue import access_first_queue
from gateway.uplink.mqtt_adapter import PUBACK_FAILURE, PahoAdapter, connect_properties
from gateway.uplink.stats import UplinkStats
from gateway.version import GATEWAY_VERSION

_LOGGER = logging.getLogger(__name__)


class CommandHandler(Protocol):
    def submit(self, inbound: InboundCommand) -> None:
        """Take one message from the commands topic; never blocks."""
        ...


class AccessHandler(Protocol):
    """The access-list side (``gateway.access.processor``): messages in, state out."""

    state_changed: asyncio.Event

    async def receive(self, payload: bytes) -> None:
        """Take one message from the access topic; never waits (commands share the loop)."""
        ...

    def take(self, payload: bytes) -> None:
        """``receive``, called from inside the client's read (``inbound_queue``)."""
        ...

    def state_json(self) -> str:
        """The retained ``{root}/access/state`` message, as of now."""
        ...

    def status(self) -> dict[str, Any]:
        """``access`` of the status message."""
        ...


class PublishRefusedError(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code (status, goodbye)."""


class _StopRequestedError(Exception):
    """Raised inside the session to end it for shutdown."""


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
        results: LaneSource | None,
        commands: CommandHandler,
        device_states: Callable[[], Mapping[str, Mapping[str, Any]]],
        password: str | None = None,
        tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None),
        access: AccessHandler | None = None,
        max_inbound_bytes: int = 8192 + 1024,
        clock_synced: Callable[[], bool] = lambda: True,
        clock: SleepingClock | None = None,
        backoff_rng: random.Random | None = None,
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
        self._max_inbound_bytes = max_inbound_bytes
        self._clock_synced = clock_synced
        # Every wait of the uplink (reconnect backoff, the status tick, the
        # failback probe) sleeps on this clock: tests drive it.
        self._clock: SleepingClock = clock or SystemClock()
        self._backoff_rng = backoff_rng  # None: Backoff's own (tests seed one)
        self.topics = Topics(topic_root)
        self.started_at = rfc3339(self._clock.wall())
        self.stats = UplinkStats()
        self.subscribed = asyncio.Event()
        """Set while subscribed to the commands topic (tests wait on it)."""
        self._stop = asyncio.Event()
        self._adapter: PahoAdapter | None = None
        self._drain = Drain(
            config,
            outbox=outbox,
            results=results,
            topics=self.topics,
            stats=self.stats,
            clock=self._clock,
            site=site,
            gateway_id=gateway_id,
        )

    # --------------------------------------------------------------- public

    async def run(self) -> None:
        """Connect, drain and serve commands until ``shutdown``; reconnect on any drop."""
        backoff = Backoff(
            initial_s=self._config.reconnect_min_s,
            cap_s=self._config.reconnect_max_s,
            rng=self._backoff_rng,
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
            await self._sleep_unless_stopped(delay)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        """The clock's sleep, cut short by ``shutdown``."""
        nap = asyncio.ensure_future(self._clock.sleep(seconds))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((nap, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            stop.cancel()

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
        if self._access is not None:
            kwargs["queue_type"] = access_first_queue(self.topics.access, self._access.take)
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
                if self._access is not None:
                    await client.subscribe(self.topics.access, qos=1)
                self.subscribed.set()
                await self._publish_status(client, "online")
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._drain.run(adapter), name="uplink-drain")
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
                self._drain.connection_lost()
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
            # CONTRACT 1.1: the list the gateway decides with, null for a local file.
            "access": self._access.status() if self._access is not None else None,
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
            await self._clock.sleep(1.0)
            states = self._state_summary()
            if (
                states != last_states
                or self._clock.monotonic() - last_sent >= self._config.status_interval_s
            ):
                await self._publish_status(client, "online")
                last_states = states
                last_sent = self._clock.monotonic()

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
            try:
                if self._access is not None and message.topic.matches(self.topics.access):
                    await self._access.receive(_payload_bytes(message.payload))
                else:
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
        self._commands.submit(
            InboundCommand(
                payload=_payload_bytes(message.payload),
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
            await self._clock.sleep(self._config.failback_s)
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
