"""Is the wall clock trustworthy yet, and which boot are we in?

A Raspberry Pi has no battery clock: after a power cut it boots with a stale
time until NTP syncs (CONTRACT.md, "Readings"). The kernel knows whether the
clock is synchronised: ``adjtimex`` returns ``TIME_ERROR`` while the NTP
daemon (systemd-timesyncd, chrony) has not yet disciplined it. The boot id
tells readings of this boot, whose monotonic stamps can still be converted to
wall time, from readings of an earlier boot, which cannot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path
from typing import Protocol

_LOGGER = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


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
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None
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
