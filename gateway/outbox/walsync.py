"""Make a SQLite database's WAL durable ourselves.

With ``journal_mode=WAL`` and ``synchronous=NORMAL`` a commit does not sync;
the outbox and the command store sync the WAL when their durability window
says so, off the event loop. fdatasync on any descriptor of the file flushes
it, so the file is opened by path for each sync (the WAL may be recreated).
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_wal(database: Path) -> bool:
    """fdatasync ``database``'s ``-wal`` file; False when there is none yet.

    Blocking: call it from a worker thread, not the event loop.
    """
    try:
        fd = os.open(f"{database}-wal", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return True
