"""The ``{root}/access`` topic: verify, apply, report (CONTRACT.md 1.1, "Access lists").

``AccessProcessor.receive`` writes a raw message to the inbox on disk
(``gateway.access.inbox``: a burst of parts costs no memory); ``run`` takes
them one at a time, in arrival order, and runs the contract's order of
checks: size (``too_large``), JSON (``bad_json``), shape (``bad_schema``),
``unknown_key``, ``bad_signature``, ``not_permitted`` (key not in
``access.key_ids``), ``wrong_gateway``; then a version not above the one
held is ignored (counted), a delta on another base is ``base_mismatch``.
Signature checking reuses the command path's helpers (``parse_json_object``,
``canonical_bytes``) so both verify the same bytes.

Every change runs on the store's one writer thread, which also reads and
parses the message: memory holds at most one message (its bytes, its parsed
JSON, its checked entries) however many wait. Once the inbox is empty and
no snapshot is being gathered, the freed memory is handed back to the
system (``gc.collect``, then glibc's ``malloc_trim``): the writer thread's
malloc arena would otherwise keep the pages of a 5,000-entry part for good. The state message
is marked for publishing after every change, refusal and ignored message,
and at most once a second while snapshot parts arrive. Each applied change
is an ``access.changed`` reading. The uplink publishes the state
(``state_json``) on every connect and whenever ``state_changed`` is set.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from drivers.access_rules import TrustedTime
from drivers.base import Clock, Priority, ReadingSink, ReadingType, make_reading
from gateway.access.inbox import AccessInbox
from gateway.access.message import (
    MAX_MESSAGE_BYTES,
    AccessDelta,
    AccessErrorReason,
    AccessMessage,
    AccessRefused,
    check_utf8,
    parse_message,
    signed_bytes,
)
from gateway.access.state import state_message, status_summary
from gateway.access.store import AccessState, AccessWriter, Change, PartOutcome
from gateway.commands.model import CommandRejected
from gateway.commands.verify import decode_json_object

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

PART_STATE_INTERVAL_S = 1.0
GIL_SWITCH_INTERVAL_S = 0.001
STALE_CHECK_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class AccessSettings:
    gateway_id: str
    public_keys: Mapping[str, bytes]
    """Every configured key (``commands.public_keys``), by key_id."""
    key_ids: frozenset[str]
    """The keys allowed to write access lists (``access.key_ids``)."""
    skew_s: float


class AccessProcessor:
    """One task applies access messages in order (module docstring)."""

    def __init__(
        self,
        settings: AccessSettings,
        *,
        writer: AccessWriter,
        inbox: AccessInbox,
        readings: ReadingSink,
        clock: Clock,
        trusted: TrustedTime,
        observe_trusted: Callable[[float], None] | None = None,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._inbox = inbox
        self._readings = readings
        self._clock = clock
        self._trusted = trusted
        self._observe_trusted = observe_trusted
        self._keys = _public_keys(settings.public_keys)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-writer")
        self._state: AccessState = writer.state()
        self.state_changed = asyncio.Event()
        self.state_changed.set()
        self._part_state_at = 0.0
        self._part_flush: asyncio.TimerHandle | None = None
        self.handled = 0
        self.dropped = 0

    # -- what the uplink calls ---------------------------------------------------

    async def receive(self, payload: bytes) -> None:
        """Put one message from ``{root}/access`` in the inbox; never waits."""
        self.take(payload)

    def take(self, payload: bytes) -> None:
        """``receive`` for synchronous callers (the MQTT client's inbound queue).

        The uplink's receive path shares this with commands, so a full inbox
        drops the message, logged (a file the disk refuses is logged by the inbox).
        """
        if not self._inbox.put(payload):
            self.dropped += 1
            _LOGGER.error("access inbox full, message dropped: dropped=%d", self.dropped)

    def state_json(self) -> str:
        """The retained state message, as of now."""
        return state_message(self._state, at=self._clock.wall())

    def status(self) -> dict[str, Any]:
        """``access`` of the status message."""
        return status_summary(self._state)

    @property
    def state(self) -> AccessState:
        return self._state

    # -- the task -----------------------------------------------------------------

    async def run(self) -> None:
        """Apply messages until cancelled; one bad message never stops the next."""
        # The writer thread's Python work shares the GIL with the doors' event
        # loop: hand it over every 1 ms instead of CPython's 5 ms default, so a
        # swipe during a 200,000-card snapshot waits less for the interpreter.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        # Parsing a part makes tens of thousands of short-lived objects, which
        # trigger full collections; freezing what the daemon has built so far
        # (modules, config, drivers) keeps each of them to a few ms, not 100+.
        gc.freeze()
        _fix_mmap_threshold()
        try:
            await self._discard_stale()
            last_stale_check = time.monotonic()
            while True:
                try:
                    async with asyncio.timeout(STALE_CHECK_INTERVAL_S):
                        path = await self._inbox.get()
                except TimeoutError:
                    path = None
                if time.monotonic() - last_stale_check >= STALE_CHECK_INTERVAL_S:
                    await self._discard_stale()
                    last_stale_check = time.monotonic()
                if path is None:
                    continue
                try:
                    # Read on the writer thread, with the parsing: never two in memory.
                    await self._handle(functools.partial(self._inbox.read, path))
                except Exception:  # one message must not stop the next
                    _LOGGER.exception("access message handling failed")
                # Not on cancellation: a message cut short by a shutdown is
                # handled again after the restart (versions make that safe).
                self._inbox.done(path)
                self.handled += 1
                if self._inbox.waiting == 0 and self._state.pending is None:
                    # Not between the parts of a snapshot: a full collection
                    # holds the interpreter lock, and the doors wait for it.
                    await self._write(_release_memory)
        finally:
            if self._part_flush is not None:
                self._part_flush.cancel()

    def close(self) -> None:
        """Stop the writer thread; a change it is writing commits or rolls back whole.

        Messages received and not yet handled are written to the inbox first,
        to be handled after the restart.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._inbox.close()

    async def _write(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _discard_stale(self) -> None:
        now = self._trusted.now()
        if await self._write(lambda: self._writer.discard_stale(now)):
            _LOGGER.info("access: snapshot parts discarded, none came for an hour")
            await self._refresh_state(throttle=False)

    async def handle(self, payload: bytes) -> None:
        """Check and apply one message; the outcome is in the state (never raises for it)."""
        await self._handle(lambda: payload)

    async def _handle(self, load: Callable[[], bytes]) -> None:
        try:
            # Off the loop: a part is up to 1 MiB of JSON and 5,000 entries to check.
            message = await self._write(lambda: self._verify(load()))
        except AccessRefused as exc:
            await self._refused(exc)
            return
        envelope = message.envelope
        if self._observe_trusted is not None:
            # The platform signed issued_at: a time the clock may trust (CONTRACT.md).
            self._observe_trusted(envelope.issued_at - self._settings.skew_s)
        if envelope.version <= self._state.version:
            await self._ignored(envelope.version)
            return
        try:
            if isinstance(message, AccessDelta):
                change = await self._write(lambda: self._writer.apply_delta(message))
                outcome = PartOutcome(change=change)
            else:
                now = self._trusted.now()
                outcome = await self._write(lambda: self._writer.stage_part(message, now))
        except AccessRefused as exc:
            await self._refused(exc)
            return
        if outcome.ignored:
            await self._ignored(envelope.version)
        elif outcome.change is not None:
            self._changed(outcome.change)
            await self._refresh_state(throttle=False)
        else:
            await self._refresh_state(throttle=True)

    def _verify(self, payload: bytes) -> AccessMessage:
        if len(payload) > MAX_MESSAGE_BYTES:
            raise AccessRefused(
                AccessErrorReason.TOO_LARGE, f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}"
            )
        try:
            obj = decode_json_object(payload, max_bytes=MAX_MESSAGE_BYTES)
        except CommandRejected as exc:
            raise AccessRefused(AccessErrorReason.BAD_JSON, exc.detail) from None
        check_utf8(payload, obj)
        message = parse_message(obj)
        signed = signed_bytes(obj, message)
        envelope = message.envelope
        version = envelope.version
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise AccessRefused(
                AccessErrorReason.UNKNOWN_KEY, "key_id not configured", version=version
            )
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - loaded with a key

        try:
            key.verify(envelope.sig, signed)
        except InvalidSignature:
            raise AccessRefused(
                AccessErrorReason.BAD_SIGNATURE, "signature does not verify", version=version
            ) from None
        if envelope.key_id not in self._settings.key_ids:
            raise AccessRefused(
                AccessErrorReason.NOT_PERMITTED, "key not allowed for access lists", version=version
            )
        if envelope.gateway != self._settings.gateway_id:
            raise AccessRefused(
                AccessErrorReason.WRONG_GATEWAY, f"addressed to {envelope.gateway}", version=version
            )
        return message

    async def _refused(self, exc: AccessRefused) -> None:
        _LOGGER.warning(
            "access message refused: reason=%s version=%s %s",
            exc.reason.value,
            exc.version,
            exc.detail,
        )
        at = self._clock.wall()
        await self._write(lambda: self._writer.record_error(exc.reason, exc.version, at))
        await self._refresh_state(throttle=False)

    async def _ignored(self, version: int) -> None:
        _LOGGER.info("access message ignored: version=%d held=%d", version, self._state.version)
        await self._write(self._writer.record_ignored)
        await self._refresh_state(throttle=False)

    def _changed(self, change: Change) -> None:
        _LOGGER.info(
            "access list changed: from=%d to=%d upserts=%d deletes=%d cards=%d",
            change.from_version,
            change.to_version,
            change.upserts,
            change.deletes,
            change.cards,
        )
        self._readings.put(
            make_reading(
                self._clock,
                self._settings.gateway_id,
                ReadingType.ACCESS_CHANGED,
                {
                    "from_version": change.from_version,
                    "to_version": change.to_version,
                    "upserts": change.upserts,
                    "deletes": change.deletes,
                    "cards": change.cards,
                    "digest": change.digest,
                },
                Priority.ROUTINE,
            )
        )

    async def _refresh_state(self, *, throttle: bool) -> None:
        self._state = await self._write(self._writer.state)
        if not throttle:
            self._announce()
            return
        # Parts arriving: at most one state message a second, the last one not lost.
        now = time.monotonic()
        wait = self._part_state_at + PART_STATE_INTERVAL_S - now
        if wait <= 0:
            self._announce()
        elif self._part_flush is None:
            self._part_flush = asyncio.get_running_loop().call_later(wait, self._announce)

    def _announce(self) -> None:
        if self._part_flush is not None:
            self._part_flush.cancel()
            self._part_flush = None
        self._part_state_at = time.monotonic()
        self.state_changed.set()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's default. Fixed, so every buffer of a message (up to 1 MiB) is its own
mapping, returned to the system when freed. Left dynamic, glibc raises the
threshold after the first such buffer is freed and serves the next ones from
the heap, which then cannot shrink: +20 MB of RSS after a 40-part snapshot."""


def _glibc_function(name: str) -> Callable[..., int] | None:
    """A function of the C library the interpreter links, when it is glibc."""
    import ctypes  # noqa: PLC0415 - only where access lists are used

    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc
        return None
    return function


def _fix_mmap_threshold() -> None:
    mallopt = _glibc_function("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _release_memory() -> None:
    """Collect, then give freed heap pages back (glibc only; elsewhere a no-op)."""
    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


def _public_keys(raw_keys: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    """The keys; ``cryptography`` (about 7 MB resident) loads only if there are any."""
    if not raw_keys:
        return {}
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    return {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in raw_keys.items()}
