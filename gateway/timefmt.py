"""RFC 3339 UTC timestamps with milliseconds and ``Z`` (CONTRACT.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def rfc3339(ts: float) -> str:
    """Format seconds since the epoch as ``2026-11-29T08:00:00.123Z``."""
    whole = int(ts // 1)
    millis = int((ts - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


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
    """``rfc3339`` with the seconds part cached: the outbox stamps many rows a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        whole = int(ts // 1)
        if whole != self._second:
            self._second = whole
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._prefix}.{int((ts - whole) * 1000):03d}Z"
