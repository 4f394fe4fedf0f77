"""``estate-central`` workers as real child processes (killed with SIGKILL in tests).

They reuse the gateway daemon's harness (log file, ``wait_for_log``, ``kill``);
only the command line differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.daemon import Daemon


class CentralProcess(Daemon):
    def __init__(self, log: Path, *args: str) -> None:
        super().__init__(log.with_suffix(".args"))  # Daemon derives ``log`` from it
        self.args = args

    def command(self) -> list[str]:
        return [sys.executable, "-m", "central", *self.args]


def ingest_worker(
    log: Path,
    dsn: str,
    urls: list[str],
    *,
    queue: str,
    site: str,
    prefetch: int = 50,
    group_max: int = 20,
) -> CentralProcess:
    return CentralProcess(
        log,
        "ingest",
        "--db",
        dsn,
        "--amqp",
        ",".join(urls),
        "--queue",
        queue,
        "--site",
        site,
        "--prefetch",
        str(prefetch),
        "--group-max",
        str(group_max),
    )
