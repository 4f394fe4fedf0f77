"""A small sd_notify client: readiness, status and the watchdog for systemd.

Implements the datagram protocol of sd_notify(3), stdlib only: each message is one
datagram of newline-separated ``KEY=value`` assignments sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``. A name starting with ``@`` is in the abstract namespace
(the ``@`` becomes a NUL byte). The watchdog interval comes from ``$WATCHDOG_USEC``,
and applies to this process only when ``$WATCHDOG_PID`` is unset or equals our pid
(sd_watchdog_enabled(3)).

Every function is a no-op when ``$NOTIFY_SOCKET`` is unset (run from a shell, in tests),
and none of them raises: a notification that cannot be delivered is logged once and
dropped, because losing a status line must never take the daemon down.

``watchdog_loop`` pings from the event loop itself, on ``asyncio.sleep``: if the loop is
blocked, the pings stop and systemd restarts the daemon after ``WatchdogSec=``. That is
the point of the watchdog, so never move these pings to a thread.

The unit that sets all of this up is ``systemd/estate-gateway.service``
(``Type=notify``, ``NotifyAccess=main``, ``WatchdogSec=30``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

# Without a watchdog (WatchdogSec= unset) STATUS= is still refreshed this often, so
# `systemctl status estate-gateway` stays current. 15 s matches the ping period for
# the shipped WatchdogSec=30.
STATUS_INTERVAL_S = 15.0

# A ping this late (as a fraction of WatchdogSec=) is logged: the loop was blocked for
# longer than the half-interval margin allows, and systemd is close to killing us.
_LATE_FRACTION = 0.75

# STATUS= is one line in `systemctl status`; systemd truncates long ones anyway.
_MAX_STATUS_CHARS = 400


def _socket_address(environ: Mapping[str, str]) -> str | None:
    """Return the notify socket address from ``environ``, or None when unset/unusable."""
    name = environ.get("NOTIFY_SOCKET", "")
    if not name:
        return None
    if name.startswith("@"):
        # Abstract namespace: the leading NUL is how Python spells it too.
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # systemd >= 254 also accepts vsock: addresses (for VMs); a Pi never gets one.
    _LOGGER.warning("Unsupported NOTIFY_SOCKET address, ignoring it: address=%r", name)
    return None


class _Notifier:
    """One notify socket, reused for every datagram a long-running loop sends."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._failed = False

    def send(self, message: str) -> bool:
        """Send one datagram; return True if it was handed to the kernel."""
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop: if systemd's queue is full, drop the ping.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as exc:
            # Logged once per notifier: a missing socket would repeat every ping.
            if not self._failed:
                _LOGGER.warning("sd_notify failed, dropping message: error=%s", exc)
                self._failed = True
            self.close()
            return False
        if self._failed:
            _LOGGER.info("sd_notify works again")
            self._failed = False
        return True

    def close(self) -> None:
        """Close the socket; the next send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message such as ``"READY=1"`` or ``"STATUS=...\\nWATCHDOG=1"``.

    Args:
        message: newline-separated ``KEY=value`` assignments.
        environ: the environment to read ``NOTIFY_SOCKET`` from; ``os.environ`` by default.

    Returns:
        True if the datagram was sent, False if there is no socket or sending failed.
        Never raises.
    """
    address = _socket_address(os.environ if environ is None else environ)
    if address is None:
        return False
    notifier = _Notifier(address)
    try:
        return notifier.send(message)
    finally:
        notifier.close()


def ready(*, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that start-up is complete (``READY=1``); ``Type=notify`` waits for it."""
    return notify("READY=1", environ=environ)


def stopping(*, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that an orderly shutdown has begun (``STOPPING=1``)."""
    return notify("STOPPING=1", environ=environ)


def _status_line(text: str) -> str:
    """Make ``text`` a single STATUS= line: no newlines, bounded length."""
    line = " ".join(text.split())
    if len(line) > _MAX_STATUS_CHARS:
        line = line[: _MAX_STATUS_CHARS - 3] + "..."
    return line


def status(text: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status shown by ``systemctl status`` (``STATUS=``)."""
    return notify("STATUS=" + _status_line(text), environ=environ)


def watchdog_interval_s(*, environ: Mapping[str, str] | None = None) -> float | None:
    """Return the watchdog timeout systemd expects pings within, in seconds.

    Returns None when no watchdog applies to this process: ``WATCHDOG_USEC`` unset,
    not a positive integer, or ``WATCHDOG_PID`` naming another process (the variables
    were inherited from a parent). Ping at half this interval or faster.
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            pid = int(pid_text)
        except ValueError:
            _LOGGER.warning("Ignoring invalid WATCHDOG_PID=%r", pid_text)
            return None
        if pid != os.getpid():
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        _LOGGER.warning("Ignoring invalid WATCHDOG_USEC=%r", usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


async def watchdog_loop(
    status_fn: Callable[[], str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Ping the systemd watchdog and refresh STATUS= until cancelled.

    Sends ``WATCHDOG=1`` (when a watchdog is configured) together with
    ``STATUS=<status_fn()>`` every half watchdog interval, or only STATUS= every
    ``STATUS_INTERVAL_S`` without a watchdog. Pings are sent from this coroutine on the
    event loop, so a blocked loop stops them, which is what the watchdog detects.

    Returns at once when ``NOTIFY_SOCKET`` is unset, or when there is neither a
    watchdog nor a ``status_fn``. An exception from ``status_fn`` is logged and the
    ping is still sent: the loop is alive even if the status text is not.

    Args:
        status_fn: returns a one-line, human-readable status, e.g.
            ``"backlog 12 routine / 0 alarm; devices 4/4 online; broker connected"``.
        environ: the environment to read; ``os.environ`` by default.
    """
    env = os.environ if environ is None else environ
    address = _socket_address(env)
    if address is None:
        _LOGGER.debug("NOTIFY_SOCKET unset: no systemd watchdog or status")
        return
    watchdog_s = watchdog_interval_s(environ=env)
    if watchdog_s is None and status_fn is None:
        return
    period_s = STATUS_INTERVAL_S if watchdog_s is None else watchdog_s / 2
    _LOGGER.debug("systemd notify loop: watchdog_s=%s period_s=%.3f", watchdog_s, period_s)

    notifier = _Notifier(address)
    last_ping = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if watchdog_s is not None and now - last_ping > _LATE_FRACTION * watchdog_s:
                # Logged before the ping: if systemd kills us anyway, the journal says why.
                _LOGGER.warning(
                    "Event loop was blocked: watchdog ping %.1f s after the last one "
                    "(systemd allows %.1f s)",
                    now - last_ping,
                    watchdog_s,
                )
            last_ping = now
            parts: list[str] = []
            if watchdog_s is not None:
                parts.append("WATCHDOG=1")
            if status_fn is not None:
                try:
                    parts.append("STATUS=" + _status_line(status_fn()))
                except Exception:  # boundary: a status bug must not stop the pings
                    _LOGGER.warning("Status callback failed", exc_info=True)
            if parts:
                notifier.send("\n".join(parts))
            await asyncio.sleep(period_s)
    finally:
        notifier.close()
