"""Access messages received and not yet handled, on disk (``access-inbox/`` in ``data_dir``).

A persistent session's catch-up delivers a whole snapshot at once: 40 parts
of half a MiB for 200,000 cards, up to 1,000 parts of 1 MiB by the contract,
far faster than the writer checks and stages them. Held in memory that
backlog is the daemon's RSS; here each message is written to its own file
as it arrives (one ``write`` of at most 1 MiB to the page cache, well under
a millisecond, so on the event loop) and its bytes are dropped at once. The
queue holds file names only, so memory does not grow with the backlog.

A file is removed once its message is handled. Files left by a crash were
already acknowledged to the broker, so they are handled after the restart,
in arrival order; that is safe because versions, not arrival, decide what
applies (a part twice, an old version: ignored). A file is written under a
temporary name and renamed, so a crash mid-write leaves no half message,
and it is written before the client acknowledges the message to the broker
(paho sends PUBACK after its message callback). There is no fsync: after a
power cut an empty file is dropped, and the platform's next push resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

INBOX_DIRNAME = "access-inbox"
INBOX_MAX_MESSAGES = 2048
"""Messages waiting (beyond a snapshot's 1,000 parts); more are dropped and logged."""
INBOX_MAX_BYTES = 1100 * 1024 * 1024
"""Bytes waiting on disk: a 1,000-part snapshot of 1 MiB parts, with room to spare."""
_SUFFIX = ".msg"
_PARTIAL = ".partial"


class AccessInbox:
    """A FIFO of raw messages in files; ``put`` on the event loop, ``read`` on any thread."""

    def __init__(
        self,
        directory: Path,
        *,
        max_messages: int = INBOX_MAX_MESSAGES,
        max_bytes: int = INBOX_MAX_BYTES,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._queue: asyncio.Queue[Path] = asyncio.Queue()
        self._sizes: dict[Path, int] = {}
        for partial in directory.glob(f"*{_PARTIAL}"):
            partial.unlink(missing_ok=True)  # cut short by a crash: never renamed, never acked
        left = []
        for path in sorted(directory.glob(f"*{_SUFFIX}"), key=_seq_of):
            size = path.stat().st_size
            if size == 0:  # renamed, its bytes lost to a power cut: nothing to handle
                path.unlink()
                continue
            left.append(path)
            self._sizes[path] = size
            self._queue.put_nowait(path)
        if left:
            _LOGGER.info("access inbox: messages left from before the restart: count=%d", len(left))
        self._seq = _seq_of(left[-1]) + 1 if left else 0

    @property
    def waiting(self) -> int:
        """Messages received and not yet handled."""
        return len(self._sizes)

    @property
    def waiting_bytes(self) -> int:
        return sum(self._sizes.values())

    def put(self, payload: bytes) -> bool:
        """Write one message to its file; False (nothing kept) when the inbox is full.

        Raises:
            OSError: the file could not be written (nothing is kept).
        """
        if len(self._sizes) >= self._max_messages or (
            self.waiting_bytes + len(payload) > self._max_bytes
        ):
            return False
        path = self._dir / f"{self._seq:012d}{_SUFFIX}"
        partial = path.with_suffix(_PARTIAL)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(partial, path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        self._seq += 1
        self._sizes[path] = len(payload)
        self._queue.put_nowait(path)
        return True

    async def get(self) -> Path:
        """The oldest message's file (read it with ``read``, then call ``done``)."""
        return await self._queue.get()

    @staticmethod
    def read(path: Path) -> bytes:
        return path.read_bytes()

    def done(self, path: Path) -> None:
        """The message is handled (applied, staged, refused or ignored): its file goes."""
        self._sizes.pop(path, None)
        path.unlink(missing_ok=True)


def _seq_of(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1
