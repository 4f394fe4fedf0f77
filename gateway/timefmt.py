"""RFC 3339 UTC timestamps with milliseconds and ``Z`` (CONTRACT.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def to_ms(ts: float) -> int:
    """Seconds since the epoch to whole milliseconds, rounded (not truncated)."""
    return round(ts * 1000)


def rfc3339(ts: float) -> str:
    """Format seconds since the epoch as ``2026-11-29T08:00:00.123Z``."""
    return rfc3339_ms(to_ms(ts))


def rfc3339_ms(ms: int) -> str:
    """Format whole milliseconds since the epoch as ``2026-11-29T08:00:00.123Z``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp (any offset) to seconds since the epoch.

    Raises:
        ValueError: when the text is not RFC 3339 with an explicit offset.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp has no offset: {text!r}")
    return parsed.astimezone(UTC).timestamp()


class TimestampFormatter:
    """``rfc3339_ms`` with the seconds part cached: batches stamp many rows a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        seconds, millis = divmod(ms, 1000)
        if seconds != self._second:
            self._second = seconds
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{self._prefix}.{millis:03d}Z"
