"""The test gateway's outbox: one place that knows its site, gateway id and boot id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.base import Clock
from gateway.outbox.store import Outbox
from gateway.runtime.clock import ClockSync
from tests.fakes import FakeClockSync

SITE = "changqing"
GATEWAY_ID = "north-gate-1"


def site_outbox(
    directory: Path,
    clock: Clock,
    *,
    clock_sync: ClockSync | None = None,
    boot_id: str = "boot-a",
    **options: Any,
) -> Outbox:
    """An outbox of north-gate-1 at changqing in ``directory`` (not opened yet).

    ``clock_sync`` defaults to a fake one; ``options`` are the outbox's own
    (``commit_interval_s``, ``sync_interval_s``, ``max_bytes``...).
    """
    return Outbox(
        directory,
        site=SITE,
        gateway_id=GATEWAY_ID,
        clock=clock,
        clock_sync=clock_sync or FakeClockSync(),
        boot_id=boot_id,
        **options,
    )
