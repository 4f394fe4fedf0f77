"""Test-only crash points: ``GATEWAY_CRASH_AT=name`` makes the daemon SIGKILL itself there.

Crash tests must kill the real process inside a window a few microseconds
wide (between two commits, say), which no outside signal can hit on purpose.
Code marks such a window with ``crash_point("name")``; when the environment
variable names it, the process kills itself with SIGKILL at that line, exactly
as a power cut or the OOM killer would stop it (no cleanup, no flush). Unset,
as in production, a crash point costs one comparison against None.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "GATEWAY_CRASH_AT"
_ARMED = os.environ.get(ENV_VAR) or None  # read once: the hot path stays a comparison


def crash_point(name: str) -> None:
    """SIGKILL this process now if ``GATEWAY_CRASH_AT`` names ``name``."""
    if _ARMED is not None and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
