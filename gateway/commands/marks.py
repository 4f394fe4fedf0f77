"""Finished marks the command store could not write, kept in memory and written later.

A command that ran is marked "finished" with its audit row and result in one
transaction (``CommandStore.finish``). When that transaction fails
(``sqlite3.Error``: a full disk, an I/O error), the result is sent from
memory (``ResultQueue.hold``), but the execution row stays "accepted": at the
next start ``CommandProcessor.report_unfinished`` would report the command
failed / ``timeout``, a second, false result for an id already answered,
possibly weeks after the disk recovered.

So the mark (the audit record, which carries the outcome) waits here, and
``write`` retries the "finished" UPDATE and the audit row, *without* the
result (it was already sent from memory), until the store takes them; the
processor then syncs them durable. Memory only: a restart before the store
recovers loses the pending marks, and the restart reports those commands as
before. At most ``MAX_PENDING_MARKS`` wait; beyond, the oldest is dropped and
logged (its command will be reported again after a restart).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque

from gateway.commands.store import AuditRecord, CommandStore

_LOGGER = logging.getLogger(__name__)

# Finished marks waiting for a failing store, at most: one per command that
# ran while the store failed, so 1000 is hours of door traffic at one gate.
MAX_PENDING_MARKS = 1000


class PendingMarks:
    """The finished marks of commands whose ``CommandStore.finish`` failed, oldest first."""

    def __init__(self, *, limit: int = MAX_PENDING_MARKS) -> None:
        self._marks: deque[AuditRecord] = deque()
        self._limit = limit
        self.dropped = 0
        """Marks dropped for the bound: a restart reports those commands failed / timeout."""

    def __len__(self) -> int:
        return len(self._marks)

    def add(self, record: AuditRecord) -> None:
        """Remember the mark of a command whose finish failed (its result went from memory)."""
        if len(self._marks) >= self._limit:
            oldest = self._marks.popleft()
            self.dropped += 1
            _LOGGER.error(
                "finished mark dropped: %d pending already (the command store is failing); "
                "a restart reports it failed/timeout id=%s dropped_total=%d",
                self._limit,
                oldest.id,
                self.dropped,
            )
        self._marks.append(record)

    def write(self, store: CommandStore) -> int:
        """Write the pending marks, oldest first, until one fails; return how many were written.

        Each is its own transaction (the "finished" UPDATE and the audit row,
        no result). Stops at the first failure, logged once: the store fails
        as a whole (a full disk), and a round of a thousand failing
        transactions would only stall the event loop.
        """
        written = 0
        while self._marks:
            record = self._marks[0]
            try:
                store.finish(record, [])  # the result was sent from memory already
            except sqlite3.Error as exc:
                _LOGGER.warning(
                    "command store still failing; finished marks pending=%d error=%s",
                    len(self._marks),
                    exc,
                )
                break
            self._marks.popleft()
            written += 1
            _LOGGER.info("finished mark written on retry id=%s", record.id)
        return written
