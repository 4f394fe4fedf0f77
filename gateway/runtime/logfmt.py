"""Log lines for journald: one line per event, ``key=value``, to stderr."""

from __future__ import annotations

import logging
import sys
import time

TRACE = 5  # raw bytes as hex, below DEBUG (STYLE.md §6)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..."``; tracebacks folded onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        message = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " | ")
        return (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f'logger={record.name} msg="{message}"'
        )


def setup_logging(level: str | int) -> None:
    logging.addLevelName(TRACE, "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("pymodbus", "asyncio"):
        logging.getLogger(noisy).setLevel(
            logging.WARNING if root.level > logging.DEBUG else root.level
        )
