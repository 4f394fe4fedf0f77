"""Messages that fail before their signature verifies: counted, not stored (issue 9, item 3).

Anyone who can publish on ``{root}/commands`` can send such messages, as fast
as the broker lets them. Each used to cost an audit row, a command-store sync
and a durable result, so a flood of 2,000 cost about 1,900 fdatasyncs and kept
real ``door.open`` commands out of the queue. Now each costs a parse and at
most one signature check, in memory:

- ``UnverifiedTally`` counts them by reason; once per interval the processor
  puts one ``audit.command`` reading with the counts (``aggregate``) and logs
  one line, instead of one audit row, reading and log line each;
- their results still go to ``{root}/commands/results`` (never to a response
  topic: that is honoured only for a verified signature), limited by a token
  bucket (``ResultBudget``), and without a sync of their own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.commands.model import RejectReason

# Results for unverified messages: a burst, then this many per second.
RESULT_BURST = 20
RESULTS_PER_S = 5.0

# The reasons a message can fail with before its signature verifies.
UNVERIFIED_REASONS = frozenset(
    {
        RejectReason.BAD_JSON,
        RejectReason.BAD_SCHEMA,
        RejectReason.UNKNOWN_KEY,
        RejectReason.BAD_SIGNATURE,
    }
)


@dataclass(slots=True)
class ResultBudget:
    """A token bucket on the monotonic clock: ``take`` says whether a result may go."""

    burst: float = RESULT_BURST
    per_s: float = RESULTS_PER_S
    _tokens: float = RESULT_BURST
    _at: float | None = None

    def take(self, now_mono: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now_mono - self._at) * self.per_s)
        self._at = now_mono
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(slots=True)
class UnverifiedTally:
    """Counts of unverified messages since the last report, and in total."""

    since_wall: float | None = None
    counts: Counter[RejectReason] = field(default_factory=Counter)
    results_suppressed: int = 0
    total: Counter[RejectReason] = field(default_factory=Counter)

    def count(self, reason: RejectReason, now_wall: float) -> None:
        if not self.counts:
            self.since_wall = now_wall
        self.counts[reason] += 1
        self.total[reason] += 1

    def take_report(self) -> tuple[float, dict[str, int], int] | None:
        """The counts since the last report (and reset them), or None when there were none."""
        if not self.counts or self.since_wall is None:
            return None
        report = (
            self.since_wall,
            {reason.value: n for reason, n in sorted(self.counts.items())},
            self.results_suppressed,
        )
        self.counts.clear()
        self.results_suppressed = 0
        self.since_wall = None
        return report


def aggregate(
    since: str, until: str, counts: dict[str, int], results_suppressed: int
) -> dict[str, Any]:
    """The ``data`` of the one ``audit.command`` reading that stands for many messages.

    The contract's fields are there (``id``, ``action``, ``device`` null: no one
    message; ``status`` rejected; ``reason`` the most frequent), with the counts
    by reason and the window they cover.
    """
    top = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
    return {
        "id": None,
        "action": None,
        "device": None,
        "status": "rejected",
        "reason": top,
        "key_id": None,
        "unverified": counts,
        "count": sum(counts.values()),
        "since": since,
        "until": until,
        "results_suppressed": results_suppressed,
    }
