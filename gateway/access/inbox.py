"""Access messages received and not yet handled, on disk (``access-inbox/`` in ``data_dir``).

A persistent session's catch-up delivers a whole snapshot at once: 40 parts
of half a MiB for 200,000 cards, up to 1,000 parts of 1 MiB by the contract,
far faster than the writer checks and stages them. Held in memory that
backlog is the daemon's RSS; here each message goes to its own file and its
bytes are dropped, and the queue holds file names only, so memory does not
grow with the backlog.

The files are written by one thread of their own, not on the event loop: a
write of half a MiB usually takes under a millisecond, but measured up to
100 ms while the disk is busy (the store's own commits are ``fsync``\\ ed),
and the doors share the loop. What waits for that thread is bounded
(``UNWRITTEN_MAX_BYTES``); beyond it ``put`` waits for the thread, which
also stops the MQTT client reading: backpressure, only when the disk stalls.

A file is removed once its message is handled. Files left by a crash were
already acknowledged to the broker, so they are handled after the restart,
in arrival order; that is safe because versions, not arrival, decide what
applies (a part twice, an old version: ignored). A file is written under a
temporary name and renamed, so a crash mid-write leaves no half message.
There is no ``fsync``: after a power cut an empty file is dropped, and the
platform's next push resends what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

INBOX_DIRNAME = "access-inbox"
INBOX_MAX_MESSAGES = 2048
"""Messages waiting (beyond a snapshot's 1,000 parts); more are dropped and logged."""
INBOX_MAX_BYTES = 1100 * 1024 * 1024
"""Bytes waiting on disk: a 1,000-part snapshot of 1 MiB parts, with room to spare."""
UNWRITTEN_MAX_BYTES = 4 * 1024 * 1024
"""Bytes received and not yet in their file (a few parts): all the memory a burst costs."""
CLOSE_TIMEOUT_S = 3.0
"""How long shutdown waits for the unwritten messages (at most 4 MiB) to reach their files."""
_SUFFIX = ".msg"
_PARTIAL = ".partial"


class AccessInbox:
    """A FIFO of raw messages in files; ``put``/``get``/``done`` on the event loop."""

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
        self._sizes: dict[int, int] = {}  # by sequence number: received, not yet handled
        self._waiting_bytes = 0
        self._unwritten: deque[tuple[int, bytes]] = deque()
        self._unwritten_bytes = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.write_failures = 0
        for partial in directory.glob(f"*{_PARTIAL}"):
            partial.unlink(missing_ok=True)  # cut short by a crash: never renamed, never acked
        last = -1
        for path in sorted(directory.glob(f"*{_SUFFIX}"), key=_seq_of):
            size = path.stat().st_size
            if size == 0:  # renamed, its bytes lost to a power cut: nothing to handle
                path.unlink()
                continue
            last = _seq_of(path)
            self._sizes[last] = size
            self._waiting_bytes += size
            self._queue.put_nowait(path)
        if self._sizes:
            _LOGGER.info(
                "access inbox: messages left from before the restart: count=%d", len(self._sizes)
            )
        self._seq = last + 1

    @property
    def waiting(self) -> int:
        """Messages received and not yet handled."""
        return len(self._sizes)

    @property
    def waiting_bytes(self) -> int:
        return self._waiting_bytes

    def put(self, payload: bytes) -> bool:
        """Hand one message to the file-writing thread; False (nothing kept) when full."""
        if (
            self._closed
            or len(self._sizes) >= self._max_messages
            or (self._waiting_bytes + len(payload) > self._max_bytes)
        ):
            return False
        seq = self._seq
        self._seq += 1
        self._sizes[seq] = len(payload)
        self._waiting_bytes += len(payload)
        if self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._write_files, args=(loop,), name="access-inbox", daemon=True
            )
            self._thread.start()
        with self._cond:
            # Backpressure, only when the disk stalls: see the module docstring.
            while self._unwritten_bytes > UNWRITTEN_MAX_BYTES and self._thread.is_alive():
                self._cond.wait(timeout=1.0)
            self._unwritten.append((seq, payload))
            self._unwritten_bytes += len(payload)
            self._cond.notify_all()
        return True

    async def get(self) -> Path:
        """The oldest message's file (read it with ``read``, then call ``done``)."""
        return await self._queue.get()

    @staticmethod
    def read(path: Path) -> bytes:
        return path.read_bytes()

    def done(self, path: Path) -> None:
        """The message is handled (applied, staged, refused or ignored): its file goes."""
        self._forget(_seq_of(path))
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Write what was received (so it is handled after the restart), then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_TIMEOUT_S)

    # -- the file-writing thread ------------------------------------------------------

    def _forget(self, seq: int) -> None:
        self._waiting_bytes -= self._sizes.pop(seq, 0)

    def _write_files(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._cond:
                while not self._unwritten and not self._closed:
                    self._cond.wait()
                if not self._unwritten:
                    return  # closed, and everything written
                seq, payload = self._unwritten[0]
            path = self._dir / f"{seq:012d}{_SUFFIX}"
            try:
                _write_file(path, payload)
            except OSError as exc:
                self.write_failures += 1
                _LOGGER.error("access message dropped, cannot write it: %s", exc)
                written: Path | None = None
            else:
                written = path
            with self._cond:
                self._unwritten.popleft()
                self._unwritten_bytes -= len(payload)
                self._cond.notify_all()
            del payload  # not kept while this thread waits for the next message
            with contextlib.suppress(RuntimeError):  # the loop closed: handled after restart
                if written is not None:
                    loop.call_soon_threadsafe(self._queue.put_nowait, written)
                else:
                    loop.call_soon_threadsafe(self._forget, seq)


def _write_file(path: Path, payload: bytes) -> None:
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


def _seq_of(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1
