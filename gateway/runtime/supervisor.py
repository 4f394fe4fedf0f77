"""The daemon: starts every part, keeps each one running, and stops them in order.

One ``asyncio.TaskGroup`` holds the outbox, the uplink, one task per Modbus
bus, one supervised task per device and the command worker. A device task
that fails is logged, its device marked offline, and restarted with backoff;
it never stops anything else (STYLE.md §5). Shutdown on SIGTERM/SIGINT runs in
stages, each with its own budget; their sum stays under systemd's
``TimeoutStopSec`` and under the 5 s the backbone issue asks for.

SIGHUP re-reads the config file. ``gateway.runtime.reload.plan_reload`` decides what
changed; the supervisor stops the device tasks of removed and changed devices
(and their simulators), then releases every Modbus line no running device
uses (its bus task cancelled, which closes the port, and the bus dropped from
the pool), then starts new ones in the same task group (with a bus task for
any Modbus line that is new) and updates ``drivers`` in place, since the
command processor and the status message read that mapping live. Releasing
before starting is what lets a line's settings change: when every device on
it changed, they come back on a new bus. An invalid file is refused and the
running config stays in force.

Longer than 400 lines because assembling, supervising, reloading and the staged shutdown
all work on the same task bookkeeping (the task group, the ``drivers`` mapping); what
needs none of it is in ``reload.py``, ``sdnotify.py`` and ``metrics.py``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from drivers.access_rules import DoorAccess
from drivers.base import DeviceState, Driver, SystemClock
from drivers.registry import (
    AnyDeviceConfig,
    DriverDeps,
    attach,
    build_driver,
    make_simulator,
    modbus_line,
)
from drivers.sim.base import Simulator
from drivers.transports.backoff import Backoff
from drivers.transports.bus_pool import BusPool
from gateway.access.sources import file_door_access
from gateway.commands.processor import CommandProcessor
from gateway.commands.queue import CommandQueue
from gateway.commands.results import ResultMessage
from gateway.commands.store import CommandStore
from gateway.config import Config, ConfigError, LoadedConfig, load_config
from gateway.outbox.store import Lane, Outbox
from gateway.runtime import sdnotify
from gateway.runtime.clock import (
    ClockSync,
    SleepingClock,
    TrustedClock,
    current_boot_id,
    make_clock_sync,
)
from gateway.runtime.device_state import OutboxDeviceState
from gateway.runtime.metrics import GatewayCollector, MetricsSources
from gateway.runtime.metrics_server import MetricsServer
from gateway.runtime.private_dir import make_private_dir, remove_tree
from gateway.runtime.reload import plan_reload
from gateway.runtime.targets import CommandTargets
from gateway.timefmt import rfc3339
from gateway.uplink.session import Uplink

if TYPE_CHECKING:
    # The platform's access lists load only with ``access.source: platform``
    # (``_platform_access``): a file-source gate keeps them out of memory.
    from gateway.access.processor import AccessProcessor
    from gateway.access.store import AccessStore

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

# Shutdown stages and their budgets, in seconds. Their sum must stay below the
# 5 s of the backbone issue and systemd's TimeoutStopSec (tests assert both).
STOP_DRIVERS_S = 1.0
FLUSH_OUTBOX_S = 1.0
GOODBYE_S = 2.0
CLOSE_S = 0.8
SHUTDOWN_BUDGET_S = STOP_DRIVERS_S + FLUSH_OUTBOX_S + GOODBYE_S + CLOSE_S

RESTART_INITIAL_S = 1.0
RESTART_CAP_S = 60.0
STABLE_RUN_S = 60.0  # a run this long resets the restart backoff


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    on_failure: Callable[[BaseException], None],
    finished: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``run`` forever: log, report and restart it with backoff when it fails.

    ``run`` returning is a failure too, unless ``finished()`` says it was asked to stop.
    """
    backoff = Backoff(initial_s=RESTART_INITIAL_S, cap_s=RESTART_CAP_S)
    while True:
        started = time.monotonic()
        try:
            await run()
            if finished():
                return
            _LOGGER.warning("task ended unexpectedly, restarting: task=%s", name)
            on_failure(RuntimeError("task ended"))
        except Exception as exc:
            _LOGGER.error("task failed, restarting: task=%s error=%r", name, exc, exc_info=True)
            on_failure(exc)
        if time.monotonic() - started >= STABLE_RUN_S:
            backoff.reset()
        await asyncio.sleep(next(backoff))


class Gateway:
    """Everything one ``run`` owns."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: SleepingClock | None = None,
        clock_sync: ClockSync | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock = clock or SystemClock()
        self.clock_sync = clock_sync or make_clock_sync(self.config.clock.source)
        cfg = self.config
        self.outbox = Outbox(
            loaded.data_dir,
            site=cfg.gateway.site,
            gateway_id=cfg.gateway.id,
            clock=self.clock,
            clock_sync=self.clock_sync,
            boot_id=current_boot_id(),
            commit_interval_s=cfg.outbox.commit_interval_ms / 1000,
            sync_interval_s=cfg.outbox.sync_interval_ms / 1000,
            max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
        )
        # Trusted time (CONTRACT 1.1) for card and command windows; its latest
        # value lives in the outbox database, restored once that is open.
        self.trusted = TrustedClock(
            self.clock, self.clock_sync, persist=self.outbox.record_trusted_time
        )
        self.buses = BusPool()
        self.drivers: dict[str, Driver] = {}
        self.simulators: dict[str, Simulator] = {}
        self.store: CommandStore | None = None
        # Drivers' durable state rides the outbox's commits (runtime/device_state.py).
        self.device_state = OutboxDeviceState(self.outbox)
        self.processor: CommandProcessor | None = None
        self.commands: CommandQueue | None = None
        self.uplink: Uplink | None = None
        self.access_store: AccessStore | None = None
        self.access_processor: AccessProcessor | None = None
        if cfg.access.source == "platform":
            from gateway.access.store import AccessStore  # noqa: PLC0415 - see TYPE_CHECKING

            self.access_store = AccessStore.open(loaded.data_dir)
        self._access = self._access_list(self.config)
        self._sim_dir: Path | None = None
        # Task bookkeeping, so a reload can stop one device and start another
        # in the running group (Python 3.11's TaskGroup cannot cancel one child).
        self._group: asyncio.TaskGroup | None = None
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._bus_tasks: dict[str, asyncio.Task[None]] = {}
        # Which Modbus line (BusPool key) each running device is on: a line
        # none of them is on any more is released at reload.
        self._device_lines: dict[str, str] = {}
        self._reload_requested = asyncio.Event()

    # ------------------------------------------------------------- assembly

    def _platform_access(self) -> AccessProcessor:
        """The processor of the platform's access lists (loaded only for ``source: platform``)."""
        from gateway.access.inbox import INBOX_DIRNAME, AccessInbox  # noqa: PLC0415 - TYPE_CHECKING
        from gateway.access.processor import AccessProcessor, AccessSettings  # noqa: PLC0415
        from gateway.access.store import DB_FILENAME, AccessWriter  # noqa: PLC0415

        return AccessProcessor(
            AccessSettings(
                gateway_id=self.config.gateway.id,
                public_keys=self.config.commands.public_key_bytes(),
                key_ids=self.config.access.key_ids,
                skew_s=self.config.commands.skew_s,
            ),
            writer=AccessWriter(self.loaded.data_dir / DB_FILENAME),
            inbox=AccessInbox(self.loaded.data_dir / INBOX_DIRNAME),
            readings=self.outbox,
            clock=self.clock,
            trusted=self.trusted,
            observe_trusted=self.trusted.observe_trusted,
        )

    async def _start_simulator(self, device: AnyDeviceConfig) -> AnyDeviceConfig:
        """Start the device's simulator; return the device's config attached to it."""
        if self._sim_dir is None:
            self._sim_dir = make_private_dir("estate-gateway-sim-")
        # The same path again when a reload restarts the device: to its bus (or
        # port) this looks like an adapter unplugged and plugged back.
        workdir = self._sim_dir / device.id
        workdir.mkdir(exist_ok=True)
        simulator = make_simulator(device, workdir)
        endpoint = await simulator.start()
        self.simulators[device.id] = simulator
        _LOGGER.info(
            "simulator started: device=%s kind=%s port=%s host=%s tcp_port=%s",
            device.id,
            device.kind,
            endpoint.port,
            endpoint.host,
            endpoint.tcp_port,
        )
        return attach(device, endpoint)

    async def _stop_simulator(self, device_id: str) -> None:
        simulator = self.simulators.get(device_id)
        if simulator is None:
            return
        try:
            await asyncio.wait_for(simulator.stop(), 1.0)
        except Exception:  # a simulator must not block the exit or a reload
            _LOGGER.warning("simulator did not stop cleanly: device=%s", device_id, exc_info=True)
        # Forgotten only once stopped: if we are cancelled first, _close stops it.
        del self.simulators[device_id]

    def _access_list(self, config: Config) -> DoorAccess:
        # Card windows are judged by trusted time (CONTRACT 1.1).
        if self.access_store is not None:
            tz = config.gateway.tz
            assert tz is not None  # the config requires a zone with the platform's list
            return DoorAccess(self.access_store, self.trusted, tz)
        return file_door_access(
            LoadedConfig(config, self.loaded.base_dir, self.loaded.source), self.trusted
        )

    async def _build_device(self, device: AnyDeviceConfig) -> Driver:
        """Start the device's simulator if it has one, and build its driver."""
        attached = await self._start_simulator(device) if device.simulate else device
        deps = DriverDeps(
            sink=self.outbox,
            clock=self.clock,
            buses=self.buses,
            access=self._access,
            state=self.device_state,
            zone=self._access.tz,  # gateway.timezone (UTC when unset)
            clock_trusted=self.clock_sync.is_synced,
        )
        try:
            driver = build_driver(attached, deps)
        except BaseException:
            await self._stop_simulator(device.id)
            raise
        line = modbus_line(attached)
        if line is not None:
            self._device_lines[device.id] = line
        return driver

    async def _assemble(self) -> None:
        await self.outbox.open()
        if self.outbox.trusted_wall is not None:
            self.trusted.observe_trusted(self.outbox.trusted_wall)
        for device in self.config.devices:
            self.drivers[device.id] = await self._build_device(device)
        commands = self.config.commands
        self.store = CommandStore.open(
            self.loaded.data_dir,
            clock=self.clock,
            now=self.trusted.now,
            audit_retention_s=commands.audit_retention_days * 86_400,
            audit_max_rows=commands.audit_max_rows,
        )
        self.processor = processor = CommandProcessor(
            self.config.commands,
            gateway_id=self.config.gateway.id,
            drivers=CommandTargets(self.drivers),
            store=self.store,
            readings=self.outbox,
            clock=self.clock,
            response_prefix=self.config.response_prefix,
            trusted=self.trusted,
        )
        await self._adopt_legacy_results(self.store)
        for result in processor.report_unfinished():
            _LOGGER.warning(
                "command accepted before a crash never finished; reported, not re-run: id=%s",
                result.id,
            )
        self.commands = CommandQueue(
            processor, report_interval_s=self.config.commands.unverified_report_s
        )
        if self.access_store is not None:
            self.access_processor = self._platform_access()
        mqtt = self.config.mqtt
        password = mqtt.password(self.loaded.base_dir)
        tls = mqtt.tls
        self.uplink = Uplink(
            mqtt,
            site=self.config.gateway.site,
            gateway_id=self.config.gateway.id,
            topic_root=self.config.topic_root,
            client_id=self.config.client_id,
            outbox=self.outbox,
            results=self.store.results,
            commands=self.commands,
            device_states=self.device_states,
            password=password.get_secret_value() if password else None,
            tls_files=(
                self.loaded.path(tls.ca) if tls.ca else None,
                self.loaded.path(tls.cert) if tls.cert else None,
                self.loaded.path(tls.key) if tls.key else None,
            ),
            access=self.access_processor,
            # The largest inbound message (a command, or an access-list message
            # when the platform sends lists) plus MQTT framing.
            max_inbound_bytes=max_inbound_bytes(self.config),
            clock_synced=self.trusted.is_synced,
            clock=self.clock,
        )

    async def _adopt_legacy_results(self, store: CommandStore) -> None:
        """Move results an older version queued in the outbox to the command store.

        Synced in the store before they leave the outbox: a crash in between
        sends them twice (the platform drops the second by id), never zero times.
        """
        legacy = await self.outbox.take_legacy_results()
        if not legacy:
            return
        store.queue_result([ResultMessage(body, topic, corr) for topic, corr, body in legacy])
        mark = store.results.committed()
        store.sync()  # once, at start, and only after an upgrade
        store.results.durable_through(mark)
        await self.outbox.drop_legacy_results()
        _LOGGER.info("results queued by the previous version moved: count=%d", len(legacy))

    # --------------------------------------------------------------- status

    def device_states(self) -> Mapping[str, Mapping[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for device_id, driver in self.drivers.items():
            health = driver.health
            # CONTRACT 1.1: last_seen always present, null when never heard.
            last_seen = health.last_seen_wall
            entry: dict[str, Any] = {
                "state": (health.state or DeviceState.OFFLINE).value,
                "last_seen": None if last_seen is None else rfc3339(last_seen),
            }
            entry.update(health.attributes)  # e.g. a door's mode
            states[device_id] = entry
        return states

    def status_line(self) -> str:
        backlog = self.outbox.stats.backlog
        online = sum(1 for d in self.drivers.values() if d.health.state is DeviceState.ONLINE)
        broker = "connected" if self.uplink and self.uplink.stats.connected else "disconnected"
        return (
            f"backlog {backlog[Lane.ROUTINE]} routine / {backlog[Lane.ALARM]} alarm; "
            f"devices {online}/{len(self.drivers)} online; broker {broker}"
        )

    def _metrics_server(self) -> MetricsServer:
        assert self.uplink is not None and self.processor is not None
        assert self.commands is not None
        queue = self.commands
        store = self.store
        assert store is not None
        sources = MetricsSources(
            site=self.config.gateway.site,
            gateway_id=self.config.gateway.id,
            outbox=self.outbox,
            uplink=self.uplink.stats,
            drivers=self.drivers,
            buses=self.buses,
            command_outcomes=self.processor.outcomes,
            commands_dropped=lambda: queue.overflowed,
            command_store_syncs=lambda: store.syncs,
            command_results_backlog=lambda: store.results.backlog,
            command_results_held=lambda: store.results.held,
            command_results_held_dropped=lambda: store.results.held_dropped,
        )
        return MetricsServer(self.config.metrics, GatewayCollector(sources))

    # ---------------------------------------------------------------- tasks

    def _spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        assert self._group is not None, "tasks start only while run() holds the group"
        return self._group.create_task(coro, name=name)

    def _start_device_task(self, device_id: str, driver: Driver) -> None:
        self._device_tasks[device_id] = self._spawn(
            supervise(f"device-{device_id}", driver.run, on_failure=_mark_failed(driver)),
            f"device-{device_id}",
        )
        # A device may have brought a Modbus line nobody used before.
        for bus in self.buses.buses:
            if bus.name not in self._bus_tasks:
                self._bus_tasks[bus.name] = self._spawn(bus.run(), f"bus-{bus.name}")

    async def _stop_device(self, device_id: str) -> None:
        """Stop one device's task (and its simulator) and forget its driver."""
        task = self._device_tasks.pop(device_id, None)
        self.drivers.pop(device_id, None)
        self._device_lines.pop(device_id, None)
        if task is not None and not await _cancel_within(task, STOP_DRIVERS_S):
            _LOGGER.warning("device task did not stop in time: device=%s", device_id)
        await self._stop_simulator(device_id)

    async def _release_unused_buses(self) -> None:
        """Stop every Modbus line no running device is on: task cancelled, port closed."""
        for bus in self.buses.release_unused(set(self._device_lines.values())):
            task = self._bus_tasks.pop(bus.name, None)
            # The bus's run() closes the port and fails its queue on the way out.
            if task is not None and not await _cancel_within(task, STOP_DRIVERS_S):
                _LOGGER.warning("bus task did not stop in time: bus=%s", bus.name)
            _LOGGER.info("modbus line released: bus=%s", bus.name)

    # --------------------------------------------------------------- reload

    def request_reload(self) -> None:
        """Ask for the config file to be read again (the SIGHUP handler calls this)."""
        self._reload_requested.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> None:
        """Re-read the config file and apply device and access changes.

        An invalid file changes nothing; changes to other sections are logged
        as needing a restart and are not applied. A device that cannot be
        started is logged and left out, so the next reload tries it again.
        """
        source = self.loaded.source
        if source is None:
            _LOGGER.warning("config reload: the config was not read from a file; nothing to do")
            return
        try:
            # A file read and a validation: off the loop, once per SIGHUP.
            new = (await asyncio.to_thread(load_config, source)).config
        except ConfigError as exc:
            _LOGGER.error(
                "config reload refused, the running config stays in force: file=%s problems=%s",
                source,
                "; ".join(exc.problems),
            )
            return
        if new.access.source != self.config.access.source:
            _LOGGER.warning("config reload: access.source changed; needs a restart, not applied")
            new = new.model_copy(update={"access": self.config.access})
        plan = plan_reload(self.config, new)
        for section in plan.needs_restart:
            _LOGGER.warning(
                "config reload: section %s changed; needs a restart, not applied", section
            )
        if not plan.applies_anything:
            _LOGGER.info("config reload: no device or access change")
            return
        _LOGGER.info(
            "config reload: added=%s removed=%s changed=%s unchanged=%s access_changed=%s",
            ",".join(plan.added) or "-",
            ",".join(plan.removed) or "-",
            ",".join(plan.changed) or "-",
            ",".join(plan.unchanged) or "-",
            plan.access_changed,
        )
        for device_id in plan.to_stop:
            await self._stop_device(device_id)
            _LOGGER.info("device stopped: device=%s", device_id)
        # Before any start: a changed device then opens its line anew, with its new settings.
        await self._release_unused_buses()
        if plan.access_changed:
            self._access = self._access_list(new)
        starting = set(plan.to_start)
        for device in new.devices:
            if device.id not in starting:
                continue
            try:
                driver = await self._build_device(device)
            except Exception as exc:  # one bad device must not stop the others
                _LOGGER.error(
                    "config reload: device not started: device=%s error=%s",
                    device.id,
                    exc,
                    exc_info=True,
                )
                continue
            self.drivers[device.id] = driver
            self._start_device_task(device.id, driver)
            _LOGGER.info("device started: device=%s kind=%s", device.id, device.kind)
        # The running config: the new devices that run and the new access;
        # every other section stays as started.
        running = [device for device in new.devices if device.id in self.drivers]
        self.config = self.config.model_copy(update={"devices": running, "access": new.access})

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down in stages."""
        try:
            await self._assemble()
            assert self.uplink is not None and self.commands is not None
            async with asyncio.TaskGroup() as group:
                self._group = group
                core = [
                    group.create_task(self.outbox.run(), name="outbox"),
                    group.create_task(self._supervised_uplink(), name="uplink"),
                    group.create_task(self.trusted.run(), name="trusted-time"),
                ]
                if self.config.metrics.enabled:
                    core.append(group.create_task(self._metrics_server().run(), name="metrics"))
                commands = group.create_task(self.commands.run(), name="commands")
                workers = [commands]
                if self.access_processor is not None:
                    workers.append(group.create_task(self.access_processor.run(), name="access"))
                for device_id, driver in self.drivers.items():
                    self._start_device_task(device_id, driver)
                reloader = group.create_task(self._reload_loop(), name="reload")
                watchdog = group.create_task(
                    sdnotify.watchdog_loop(self.status_line), name="watchdog"
                )
                sdnotify.ready()
                _LOGGER.info(
                    "gateway running: site=%s gateway=%s devices=%d epoch=%s",
                    self.config.gateway.site,
                    self.config.gateway.id,
                    len(self.drivers),
                    self.outbox.stats.epoch,
                )
                await stop.wait()
                sdnotify.stopping()
                _LOGGER.info("shutting down")
                await _stage(
                    "stop drivers and commands",
                    STOP_DRIVERS_S,
                    self._stop_workers(reloader, workers),
                )
                self.trusted.persist_now()  # written by the flush below
                await _stage("flush the outbox", FLUSH_OUTBOX_S, self.outbox.flush())
                await _stage("publish offline status", GOODBYE_S, self._goodbye(core[1]))
                await _stage(
                    "close", CLOSE_S, _cancel_all([*core, *self._bus_tasks.values(), watchdog])
                )
        finally:
            # Also when assembly or a task failed: files, simulators and ptys are released.
            await self._close()

    async def _stop_workers(
        self, reloader: asyncio.Task[None], workers: list[asyncio.Task[None]]
    ) -> None:
        # The reloader first: a reload cut short may have started devices.
        await _cancel_all([reloader])
        await _cancel_all([*workers, *self._device_tasks.values()])

    async def _supervised_uplink(self) -> None:
        """The uplink under ``supervise``: a bug in it is logged, reported and restarted."""
        uplink = self.uplink
        assert uplink is not None

        def failed(exc: BaseException) -> None:
            uplink.stats.last_error = f"uplink failed: {exc!r}"[:200]

        await supervise("uplink", uplink.run, on_failure=failed, finished=lambda: uplink.stopping)

    async def _goodbye(self, uplink_task: asyncio.Task[None]) -> None:
        assert self.uplink is not None
        await self.uplink.shutdown()
        await asyncio.wait({uplink_task})

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self.outbox.close(), CLOSE_S)
        except Exception:  # the rest must still close
            _LOGGER.exception("outbox did not close cleanly")
        if self.store is not None:
            self.store.close()
        if self.access_processor is not None:
            self.access_processor.close()
        if self.access_store is not None:
            self.access_store.close()
        for device_id in list(self.simulators):
            await self._stop_simulator(device_id)
        if self._sim_dir is not None:
            remove_tree(self._sim_dir)


MQTT_FRAMING_BYTES = 1024
"""Room for the fixed header, topic and properties of one inbound PUBLISH."""

ACCESS_OVERSIZE_MARGIN_BYTES = 64 * 1024
"""How far past 1 MiB an access message still reaches the gateway, so that it is
refused as ``too_large`` in the access state rather than silently by the broker."""


def max_inbound_bytes(config: Config) -> int:
    """The largest inbound message the gateway takes (MQTT 5 Maximum Packet Size).

    A command is at most ``commands.max_payload_bytes``; when the platform sends
    access lists, a list message is at most 1 MiB (CONTRACT 1.1), so the bound
    is raised for it. Anything larger is refused by the broker, never copied here.
    """
    limit = config.commands.max_payload_bytes
    if config.access.source == "platform":
        from gateway.access.message import MAX_MESSAGE_BYTES  # noqa: PLC0415 - see TYPE_CHECKING

        limit = max(limit, MAX_MESSAGE_BYTES + ACCESS_OVERSIZE_MARGIN_BYTES)
    return limit + MQTT_FRAMING_BYTES


def _mark_failed(driver: Driver) -> Callable[[BaseException], None]:
    def mark(exc: BaseException) -> None:
        driver.health.set_state(DeviceState.OFFLINE, f"driver failed: {exc!r}"[:200])

    return mark


async def _cancel_within(task: asyncio.Task[None], budget_s: float) -> bool:
    """Cancel ``task`` and wait up to ``budget_s`` for it to end; False if it has not."""
    task.cancel()
    _done, pending = await asyncio.wait({task}, timeout=budget_s)
    return not pending


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _stage(name: str, budget_s: float, work: Awaitable[None]) -> None:
    """Run one shutdown stage; if it overruns, say what and move on."""
    try:
        async with asyncio.timeout(budget_s):
            await work
    except TimeoutError:
        _LOGGER.warning("shutdown stage overran its budget: stage=%r budget_s=%.1f", name, budget_s)
    except Exception:  # the next stage must still run
        _LOGGER.exception("shutdown stage failed: stage=%r", name)


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` once; a second signal kills the default way."""
    loop = asyncio.get_running_loop()

    def handler(signum: int) -> None:
        _LOGGER.info("signal received: signal=%s", signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)


def install_reload_signal(reload: Callable[[], None]) -> None:
    """SIGHUP calls ``reload`` (``Gateway.request_reload``), the usual daemon convention."""
    loop = asyncio.get_running_loop()

    def handler() -> None:
        _LOGGER.info("signal received: signal=SIGHUP, reloading the configuration")
        reload()

    loop.add_signal_handler(signal.SIGHUP, handler)
