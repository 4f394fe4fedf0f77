"""The command path: verify, authorise, dedupe, run, audit, report (CONTRACT.md, "Commands").

``CommandProcessor.screen`` takes each message from ``{root}/commands`` as it
arrives and runs the checks up to the signature (``CommandVerifier.authenticate``).
A message that fails there is counted, not stored: no audit row, no sync, a
rate-limited result, and one aggregate ``audit.command`` reading per interval
(``gateway.commands.unverified``). Only authentic messages are queued, and
``CommandProcessor.handle`` then:

1. runs the remaining checks (``CommandVerifier.authorize``) and decides
   where the result also goes (``gateway.commands.inbound.reply_for``: an
   MQTT 5 response topic only under the configured prefix);
2. for an accepted command, records it "accepted" together with its id in
   one fsynced transaction (``CommandStore.accept``), *then* runs it, so a
   crash can never run it twice;
3. runs it under ``execute_timeout_s``: ``gateway.ping`` is answered by the
   gateway itself, anything else by the device's driver;
4. records it "finished" with its audit row *and its result* in one
   transaction (``CommandStore.finish``; the uplink sends results from the
   store, ``gateway.commands.results``), syncs, and puts an ``audit.command``
   reading to the ``ReadingSink``. A kill at any point after that commit
   still delivers the result, once, after the restart.

Every authentic command, executed or not, gets an audit row, a reading and a result
(the result from memory when the store fails, see below).

Outcome mapping of ``Driver.execute``:

=============================  =========  ==================
raised                         status     reason
=============================  =========  ==================
nothing                        done       null
``TimeoutError`` (our budget)  failed     ``timeout``
``DeviceTimeout``              failed     ``timeout``
``DeviceOffline``              failed     ``device_offline``
``ActionNotSupportedError``    rejected   ``not_permitted``
``DeviceError`` (``Refused``)  failed     ``device_error``
any other ``Exception``        failed     ``device_error`` (logged)
=============================  =========  ==================

The driver receives the action as a typed value (``drivers.actions``,
``DoorOpen(hold_seconds=5)``), checked once here, and raises only the device
error family of ``drivers.base``: this layer never sees a transport error. A
device timeout is the device not answering in time, the same fact as our own
budget running out, so both are ``timeout``.

Commands found "accepted" but not "finished" at start-up (the gateway died
mid-command) are reported by ``report_unfinished`` as failed / ``timeout``:
the gateway never learned the outcome, exactly as when a device does not
answer in time; ``device_error`` would blame the device for our crash. They
are never run again. The same applies when the processor is cancelled
(shutdown) while a device is executing.

``gateway.ping`` is addressed to the gateway itself: its ``device`` is the
gateway's own id, and it must be granted under that id in ``permissions``.

When the store itself fails (``sqlite3.Error``: a full disk, an I/O error, a
corrupt file) before a command runs, the command is not run (its id could not
be made durable) and fails with ``device_error``: the contract has no reason
for the gateway's own faults. Whenever the store cannot write a result (that
one, a finished command's, a refusal's, an unverified message's), the result
is still sent, from memory (``ResultQueue.hold``): not durable, so a restart
before the broker takes it loses it, and logged at ERROR as such. A command
that ran but whose finished mark failed stays "accepted" in the store for a
while: its mark and audit row wait in memory (``gateway.commands.marks``) and
``run_finish_retries`` writes them, without the result, every
``FINISH_RETRY_S`` until the store takes them, then syncs. Only a restart
before the store recovers (the pending marks are memory, lost at shutdown)
makes ``report_unfinished`` report it failed / ``timeout``: a second result
for that id, after the real one.

Longer than 400 lines because every step of a command's life (verify, durable accept,
execute, audit, result, and the report of commands left unfinished by a crash) stays
together: this file alone answers what happens to a command.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from drivers.base import (
    ActionNotSupportedError,
    Clock,
    DeviceError,
    DeviceOffline,
    DeviceTimeout,
    Driver,
    Priority,
    ReadingSink,
    ReadingType,
    make_reading,
)
from gateway.commands.inbound import InboundCommand, Reply, reply_for
from gateway.commands.marks import PendingMarks
from gateway.commands.model import (
    CommandMessage,
    CommandRejected,
    CommandResult,
    CommandsConfig,
    CommandStatus,
    RejectReason,
    VerifiedCommand,
)
from gateway.commands.results import messages
from gateway.commands.store import AuditRecord, CommandStore
from gateway.commands.unverified import ResultBudget, UnverifiedTally, aggregate
from gateway.commands.verify import CommandVerifier
from gateway.runtime import faults
from gateway.runtime.clock import TrustedTime
from gateway.timefmt import rfc3339

_LOGGER = logging.getLogger(__name__)

# Results queued without a sync of their own are synced at most this often
# (seconds): a flood of unsigned messages must not become a flood of fsyncs
# (issue 9); the outbox's sync interval was their window before.
QUEUED_RESULT_SYNC_S = 1.0

# While finished marks wait for a failing store, it is retried this often
# (seconds): a full disk freed by an operator takes minutes, and each attempt
# is one short failing transaction on the loop.
FINISH_RETRY_S = 5.0

# Authentic commands refused after the replay check: their id is spent.
_SPENDS_ID = frozenset({RejectReason.UNKNOWN_DEVICE, RejectReason.NOT_PERMITTED})


class _DriverActions(Mapping[str, frozenset[str]]):
    """A live view of ``device_id -> driver.actions()``."""

    def __init__(self, drivers: Mapping[str, Driver]) -> None:
        self._drivers = drivers

    def __getitem__(self, device_id: str) -> frozenset[str]:
        return self._drivers[device_id].actions()

    def __iter__(self) -> Iterator[str]:
        return iter(self._drivers)

    def __len__(self) -> int:
        return len(self._drivers)


class CommandProcessor:
    """Runs the command path for one gateway.

    Args:
        config: the ``commands:`` section.
        gateway_id: this gateway's id (``gateway`` field, and the ``device`` of a ping).
        drivers: device id -> driver; read live, so the mapping may be filled later.
        store: the open ``CommandStore`` (owned by the caller, who closes it).
        readings: sink for ``audit.command`` readings.
        clock: wall clock for validity and stamps, monotonic clock for latency.
        response_prefix: a response topic is honoured only strictly under this.
        trusted: trusted time for the validity window (CONTRACT 1.1), when given.
    """

    def __init__(
        self,
        config: CommandsConfig,
        *,
        gateway_id: str,
        drivers: Mapping[str, Driver],
        store: CommandStore,
        readings: ReadingSink,
        clock: Clock,
        response_prefix: str,
        trusted: TrustedTime | None = None,
    ) -> None:
        self._config = config
        self._response_prefix = response_prefix
        self.unverified = UnverifiedTally()
        self._result_budget = ResultBudget()
        self._gateway_id = gateway_id
        self._drivers = drivers
        self._store = store
        self._readings = readings
        self._clock = clock
        # One thread for the store's fsyncs: an fsync on the loop would stall
        # every device and the uplink for as long as the storage takes.
        self._store_sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="command-sync")
        # Results queued without a sync of their own (unverified messages, the
        # report of unfinished commands) become sendable at the next sync.
        self._sync_wanted = asyncio.Event()
        self._last_sync_mono = float("-inf")
        # Results by (status, reason), reason "none" for done: for metrics.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # Finished marks the store could not write, and the retry loop's wake-up.
        self.pending_marks = PendingMarks()
        self._marks_pending = asyncio.Event()
        self._verifier = CommandVerifier(
            config,
            gateway_id=gateway_id,
            device_actions=_DriverActions(drivers),
            seen=store,
            clock=clock,
            trusted=trusted,
        )

    def screen(self, inbound: InboundCommand) -> CommandMessage | None:
        """Checks up to the signature, as the message arrives; None when it failed them.

        A failed message ends here: counted by reason, its result rate-limited
        and without a sync of its own, no audit row (``report_unverified``
        sums them up). Never raises for a bad message.
        """
        try:
            return self._verifier.authenticate(inbound.payload)
        except CommandRejected as rejected:
            self._unverified(rejected, inbound)
            return None

    async def process(self, inbound: InboundCommand) -> CommandResult | None:
        """``screen`` then ``handle``: one message to its result (None: unverified)."""
        message = self.screen(inbound)
        if message is None:
            return None
        return await self.handle(inbound, message)

    async def handle(self, inbound: InboundCommand, message: CommandMessage) -> CommandResult:
        """Process one authentic command to its result (never raises for a bad command).

        Latency is measured from ``inbound.received_mono`` to the end of the
        device's ``execute``.

        Raises:
            asyncio.CancelledError: after recording and reporting an interrupted command.
        """
        received_mono = inbound.received_mono
        received_at = self._clock.wall() - max(0.0, self._clock.monotonic() - received_mono)
        # The signature verified: only now may the message choose a reply topic.
        reply = reply_for(inbound, self._response_prefix)
        command: VerifiedCommand | None = None
        try:
            command = self._verifier.authorize(message)
            accepted = self._store.accept(
                command,
                received_at=received_at,
                response_topic=reply.response_topic,
                correlation_data=reply.correlation_data,
            )
        except CommandRejected as rejected:
            result = self._reject(rejected, received_at, received_mono, reply)
            await self._sync_store()
            return result
        except sqlite3.Error:
            # The id cannot be checked or made durable: running the command
            # could run it twice, so it is not run.
            _LOGGER.exception(
                "command store failed; command not run, its result sent from memory "
                "(not durable) id=%s",
                message.id,
            )
            result = self._result(
                message.id,
                CommandStatus.FAILED,
                RejectReason.DEVICE_ERROR,
                message.device,
                received_mono,
            )
            self._emit(result, message.action, message.key_id, received_at, reply, store=False)
            return result
        if not accepted:
            # The same id arrived twice at once: the store's atomic insert decides.
            result = self._reject(
                CommandRejected(
                    RejectReason.REPLAYED,
                    "id used concurrently",
                    command_id=command.id,
                    device=command.device,
                    action=command.action,
                    key_id=command.key_id,
                ),
                received_at,
                received_mono,
                reply,
            )
            await self._sync_store()
            return result
        # "Recorded as accepted before it runs": on disk, not just committed.
        await self._sync_store()
        faults.crash_point("command-accepted")  # test-only: a kill mid-command

        # Cancelled (shutdown) mid-command, the outcome is unknown: the finally
        # reports it as such now, rather than at the next start.
        status: CommandStatus = CommandStatus.FAILED
        reason: RejectReason | None = RejectReason.TIMEOUT
        try:
            status, reason = await self._execute(command)
        finally:
            result = self._result(command.id, status, reason, command.device, received_mono)
            self._emit(result, command.action, command.key_id, received_at, reply, finish=True)
        await self._sync_store()
        return result

    def _unverified(self, rejected: CommandRejected, inbound: InboundCommand) -> None:
        self.unverified.count(rejected.reason, self._clock.wall())
        self.outcomes[CommandStatus.REJECTED.value, rejected.reason.value] += 1
        if not self._result_budget.take(self._clock.monotonic()):
            self.unverified.results_suppressed += 1
            return
        result = self._result(
            rejected.command_id,
            CommandStatus.REJECTED,
            rejected.reason,
            rejected.device,
            inbound.received_mono,
        )
        # Results topic only, and no sync of its own: run_syncs makes it durable
        # (one sync for a whole burst).
        answer = messages(result.to_json().decode(), None, None)
        try:
            self._store.queue_result(answer)
        except sqlite3.Error:
            _LOGGER.exception(
                "command store failed; result of an unverified message sent from memory "
                "(not durable)"
            )
            self._store.results.hold(answer)
            return
        self._sync_wanted.set()

    def report_unverified(self) -> None:
        """Put one ``audit.command`` reading (and log one line) for the unverified
        messages since the last call; nothing when there were none."""
        report = self.unverified.take_report()
        if report is None:
            return
        since, counts, suppressed = report
        data = aggregate(rfc3339(since), rfc3339(self._clock.wall()), counts, suppressed)
        _LOGGER.warning(
            "unverified command messages rejected: count=%d by_reason=%s results_suppressed=%d",
            data["count"],
            ",".join(f"{reason}:{n}" for reason, n in counts.items()),
            suppressed,
        )
        self._readings.put(
            make_reading(
                self._clock, self._gateway_id, ReadingType.AUDIT_COMMAND, data, Priority.ROUTINE
            )
        )

    async def _sync_store(self) -> None:
        """Make the store's commits durable on its worker thread, off the event loop;
        the results they hold may then be sent."""
        loop = asyncio.get_running_loop()
        mark = self._store.results.committed()  # before the sync: what it will cover
        self._last_sync_mono = self._clock.monotonic()
        try:
            await loop.run_in_executor(self._store_sync, self._store.sync)
        except OSError:
            _LOGGER.exception("command store sync failed")
            return
        self._store.results.durable_through(mark)

    async def run_syncs(self) -> None:
        """Sync for results queued without one (``report_unfinished``, unverified
        messages), until cancelled."""
        while True:
            await self._sync_wanted.wait()
            wait_s = self._last_sync_mono + QUEUED_RESULT_SYNC_S - self._clock.monotonic()
            if wait_s > 0:  # gather a burst into one sync
                await asyncio.sleep(min(wait_s, QUEUED_RESULT_SYNC_S))
            self._sync_wanted.clear()
            if self._store.results.committed() > self._store.results.durable:
                await self._sync_store()  # unless a command's own sync covered them

    async def retry_finished_marks(self) -> int:
        """Write the finished marks the store could not take, then sync them
        durable; return how many were written (0: none pending, or the store
        still fails)."""
        written = self.pending_marks.write(self._store)
        if written:
            await self._sync_store()
        return written

    async def run_finish_retries(self) -> None:
        """Every ``FINISH_RETRY_S`` while finished marks are pending, retry them,
        until cancelled (pending marks are then lost: a restart reports them)."""
        while True:
            await self._marks_pending.wait()
            await asyncio.sleep(FINISH_RETRY_S)
            await self.retry_finished_marks()
            if not self.pending_marks:
                self._marks_pending.clear()

    def report_unfinished(self) -> list[CommandResult]:
        """Report commands a previous run accepted but never finished; call once at start-up.

        Each becomes failed / ``timeout`` (outcome unknown) and is never run again.
        """
        results = []
        for pending in self._store.unfinished():
            _LOGGER.warning(
                "command interrupted by a restart, reported failed id=%s action=%s device=%s",
                pending.id,
                pending.action,
                pending.device,
            )
            result = CommandResult(
                id=pending.id,
                status=CommandStatus.FAILED,
                reason=RejectReason.TIMEOUT,
                device=pending.device,
                at=self._clock.wall(),
                latency_ms=None,
            )
            self._emit(
                result,
                pending.action,
                pending.key_id,
                pending.received_at,
                Reply(pending.response_topic, pending.correlation_data),
                finish=True,
            )
            results.append(result)
        if results:
            self._sync_wanted.set()  # run_syncs makes them durable, hence sendable
        return results

    async def _execute(self, command: VerifiedCommand) -> tuple[CommandStatus, RejectReason | None]:
        if command.device == self._gateway_id:
            return CommandStatus.DONE, None  # gateway.ping: answering is the whole job
        driver = self._drivers.get(command.device)
        if driver is None:  # the driver vanished between verification and now
            return CommandStatus.REJECTED, RejectReason.UNKNOWN_DEVICE
        try:
            async with asyncio.timeout(self._config.execute_timeout_s):
                await driver.execute(command.params)
        except (TimeoutError, DeviceTimeout):
            return CommandStatus.FAILED, RejectReason.TIMEOUT
        except DeviceOffline:
            return CommandStatus.FAILED, RejectReason.DEVICE_OFFLINE
        except ActionNotSupportedError:
            return CommandStatus.REJECTED, RejectReason.NOT_PERMITTED
        except DeviceError:
            return CommandStatus.FAILED, RejectReason.DEVICE_ERROR
        except Exception:  # a driver bug fails one command, never the gateway
            _LOGGER.error(
                "driver raised unexpectedly id=%s device=%s",
                command.id,
                command.device,
                exc_info=True,
            )
            return CommandStatus.FAILED, RejectReason.DEVICE_ERROR
        return CommandStatus.DONE, None

    def _reject(
        self,
        rejected: CommandRejected,
        received_at: float,
        received_mono: float,
        reply: Reply,
    ) -> CommandResult:
        result = self._result(
            rejected.command_id,
            CommandStatus.REJECTED,
            rejected.reason,
            rejected.device,
            received_mono,
        )
        spent = rejected.expires_at if rejected.reason in _SPENDS_ID else None
        self._emit(
            result,
            rejected.action,
            rejected.key_id,
            received_at,
            reply,
            keep_id_until=spent,
            detail=rejected.detail,
        )
        return result

    def _result(
        self,
        command_id: str | None,
        status: CommandStatus,
        reason: RejectReason | None,
        device: str | None,
        received_mono: float,
    ) -> CommandResult:
        return CommandResult(
            id=command_id,
            status=status,
            reason=reason,
            device=device,
            at=self._clock.wall(),
            latency_ms=max(0.0, (self._clock.monotonic() - received_mono) * 1000.0),
        )

    def _emit(
        self,
        result: CommandResult,
        action: str | None,
        key_id: str | None,
        received_at: float,
        reply: Reply,
        *,
        finish: bool = False,
        store: bool = True,
        keep_id_until: float | None = None,
        detail: str = "",
    ) -> None:
        """Audit row with the result (one transaction), then the audit reading.

        ``store`` False: the store just failed, the result goes from memory.
        """
        record = AuditRecord(
            id=result.id,
            action=action,
            device=result.device,
            status=result.status,
            reason=result.reason,
            received_at=received_at,
            key_id=key_id,
            latency_ms=result.latency_ms,
            at=result.at,
        )
        answer = messages(result.to_json().decode(), reply.response_topic, reply.correlation_data)
        if not store:
            self._store.results.hold(answer)  # not durable, but not lost either
        else:
            try:
                if finish:
                    self._store.finish(record, answer)
                    # Test-only: where a kill used to lose the result (it was
                    # queued in the outbox after this commit).
                    faults.crash_point("command-finished")
                else:
                    self._store.record(record, answer, keep_id_until=keep_id_until)
            except sqlite3.Error:
                _LOGGER.exception(
                    "command store failed; %s, result sent from memory (not durable) id=%s",
                    "finished mark and audit row retried later" if finish else "audit row lost",
                    result.id,
                )
                self._store.results.hold(answer)
                if finish:  # else a restart reports a command that ran as failed
                    self.pending_marks.add(record)
                    self._marks_pending.set()
        self.outcomes[
            result.status.value, "none" if result.reason is None else result.reason.value
        ] += 1
        level = logging.INFO if result.status is CommandStatus.DONE else logging.WARNING
        # Never the payload or its signature (STYLE.md §6): fields and reason only.
        _LOGGER.log(
            level,
            "command id=%s action=%s device=%s key_id=%s status=%s reason=%s latency_ms=%s%s",
            result.id,
            action,
            result.device,
            key_id,
            result.status.value,
            None if result.reason is None else result.reason.value,
            None if result.latency_ms is None else f"{result.latency_ms:.1f}",
            f" detail={detail}" if detail else "",
        )
        self._readings.put(
            make_reading(
                self._clock,
                result.device or self._gateway_id,
                ReadingType.AUDIT_COMMAND,
                {
                    "id": result.id,
                    "action": action,
                    "device": result.device,
                    "status": result.status.value,
                    "reason": None if result.reason is None else result.reason.value,
                    "key_id": key_id,
                },
                Priority.ROUTINE,
            )
        )
