"""Is the wall clock trustworthy yet, which boot are we in, and what time is it really?

A Raspberry Pi has no battery clock: after a power cut it boots with a stale
time until NTP syncs (CONTRACT.md, "Readings"). The kernel knows whether the
clock is synchronised: ``adjtimex`` returns ``TIME_ERROR`` while the NTP
daemon (systemd-timesyncd, chrony) has not yet disciplined it. The boot id
tells readings of this boot, whose monotonic stamps can still be converted to
wall time, from readings of an earlier boot, which cannot.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from drivers.base import Clock
from drivers.transports.timing import Timer

_LOGGER = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


class SleepingClock(Clock, Timer, Protocol):
    """A clock that also waits: what the uplink takes, so tests drive its time.

    ``drivers.base.SystemClock`` is one; ``Timer`` is the drivers' side of it
    (the Modbus bus takes that), since drivers may not import the gateway.
    """


class ClockSync(Protocol):
    def is_synced(self) -> bool: ...


class TrustedClockSync:
    """The wall clock is always right (a machine with an RTC, or tests)."""

    def is_synced(self) -> bool:
        return True


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h>; only the return value is used.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


class KernelClockSync:
    """Asks the kernel (read-only ``adjtimex``) whether the clock is synchronised."""

    def __init__(self) -> None:
        # The process's own symbols (dlopen(NULL)) include libc's: no
        # ctypes.util.find_library, which runs ldconfig and loads shutil,
        # tempfile, bz2 and lzma into the daemon for good.
        libc = ctypes.CDLL(None, use_errno=True)
        self._libc = libc if hasattr(libc, "adjtimex") else None
        if self._libc is None:
            _LOGGER.warning("clock: no libc adjtimex; treating the clock as unsynced")

    def is_synced(self) -> bool:
        if self._libc is None:
            return False
        timex = _Timex()  # modes = 0: read only
        state = int(self._libc.adjtimex(ctypes.byref(timex)))
        return state not in (-1, _TIME_ERROR)


def make_clock_sync(source: str) -> ClockSync:
    return TrustedClockSync() if source == "trust" else KernelClockSync()


def current_boot_id() -> str:
    """The kernel's id of this boot (random per boot), or "unknown"."""
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


# How often the latest trusted time is written down (SD wear: a small write a
# minute at most, plus one at shutdown). A power cut costs at most this much:
# after it, "now" restarts from a time up to this far in the past, never ahead.
TRUSTED_PERSIST_INTERVAL_S = 60.0


class TrustedTime(Protocol):
    """What the command and access paths need of time (CONTRACT 1.1)."""

    def now(self) -> float: ...

    def observe_trusted(self, wall_s: float) -> None: ...


class TrustedClock:
    """The trusted "now" when the wall clock may be wrong (CONTRACT 1.1, "Time
    when the clock cannot be trusted").

    While the kernel says the clock is synchronised (``ClockSync``), now is the
    wall clock, and it is remembered as the latest trusted time. Otherwise now
    is the latest trusted time plus the monotonic time elapsed since it was
    trusted: a stale boot time (a Pi without a battery clock) can neither
    revive an expired card nor reopen a used command id. A restart adds nothing
    for the time the gateway was down, so this never runs ahead of the true
    time. Before anything was ever trusted, the wall clock is used as it is.

    The latest trusted time survives restarts through ``persist`` (the outbox
    writes it into its meta table), called at most every
    ``TRUSTED_PERSIST_INTERVAL_S`` and by ``persist_now`` at shutdown; the
    value stored at the last run comes back as ``last_trusted``.
    """

    def __init__(
        self,
        clock: Clock,
        sync: ClockSync,
        *,
        last_trusted: float | None = None,
        persist: Callable[[float], None] | None = None,
        persist_interval_s: float = TRUSTED_PERSIST_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._sync = sync
        self._persist = persist
        self._persist_interval_s = persist_interval_s
        # The latest trusted wall time and the monotonic time it was true at.
        self._anchor: tuple[float, float] | None = None
        if last_trusted is not None:
            self._anchor = (last_trusted, clock.monotonic())
        self._persisted_mono: float | None = None

    def is_synced(self) -> bool:
        """Whether the wall clock itself is trusted now (the status ``clock.synced``)."""
        return self._sync.is_synced()

    def now(self) -> float:
        """Trusted wall seconds (see the class docstring)."""
        if self._sync.is_synced():
            wall = self._clock.wall()
            self._anchor = (wall, self._clock.monotonic())
            self._maybe_persist()
            return wall
        if self._anchor is None:
            return self._clock.wall()
        return self._projected(self._anchor)

    def observe_trusted(self, wall_s: float) -> None:
        """A time known not to be in the future (a signed ``issued_at`` less the skew).

        Only moves "now" forward; an older time tells nothing new.
        """
        if self._anchor is None or wall_s > self._projected(self._anchor):
            self._anchor = (wall_s, self._clock.monotonic())
            self._maybe_persist()

    def persist_now(self) -> None:
        """Write the latest trusted time down now (shutdown)."""
        if self._persist is not None and self._anchor is not None:
            self._persist(self._projected(self._anchor))
            self._persisted_mono = self._clock.monotonic()

    async def run(self) -> None:
        """Keep the stored time moving while nothing else asks for it (idle gateway)."""
        while True:
            await asyncio.sleep(self._persist_interval_s)
            self.now()
            self._maybe_persist()

    def _projected(self, anchor: tuple[float, float]) -> float:
        wall, mono = anchor
        return wall + max(0.0, self._clock.monotonic() - mono)

    def _maybe_persist(self) -> None:
        mono = self._clock.monotonic()
        if self._persisted_mono is None or mono - self._persisted_mono >= self._persist_interval_s:
            self.persist_now()
