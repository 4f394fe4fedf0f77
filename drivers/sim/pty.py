"""A pseudo-terminal whose path can be unplugged and replugged like a USB adapter.

The simulator keeps the master side; the driver opens ``path``, a symlink to
the slave side (``/dev/pts/N``), exactly as it would open ``/dev/ttyUSB0``.
Unplugging closes the master (the driver's reads then fail with EIO, as when
an adapter is pulled) and removes the symlink; replugging makes a new pty and
points the same symlink at it.
"""

from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyLink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.master_fd: int | None = None
        self._slave_fd: int | None = None

    @property
    def plugged(self) -> bool:
        return self.master_fd is not None

    def plug(self) -> None:
        """Create the pty and the symlink. Idempotent."""
        if self.master_fd is not None:
            return
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        slave_name = os.ttyname(slave)
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(slave_name)
        tmp.replace(self.path)
        self.master_fd = master
        # Keep the slave open ourselves: without it, the master reads EIO
        # whenever the driver has the port closed (between reopen attempts).
        self._slave_fd = slave

    def unplug(self) -> None:
        """Close the pty and remove the path, as a pulled USB adapter does."""
        self.path.unlink(missing_ok=True)
        for fd in (self.master_fd, self._slave_fd):
            if fd is not None:
                os.close(fd)
        self.master_fd = None
        self._slave_fd = None

    def write(self, data: bytes) -> None:
        """Write to the driver's side; dropped silently while unplugged."""
        if self.master_fd is None:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master_fd, view)
            except BlockingIOError:
                # The pty buffer is full (driver not reading): the wire would drop too.
                return
            view = view[n:]
