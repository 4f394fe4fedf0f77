"""When a polled device is offline: silent for a while, not one failed transaction.

A burst of noise on an RS-485 line (a lift motor, a long unshielded run) can
cost a few transactions in a row while the device is there all along. Calling
it offline then raises an alarm for nothing and, worse, makes the driver treat
what happened meanwhile as of unknown age. So a device is offline only once it
has failed ``after_failures`` polls in a row *and* not answered for ``after_s``.
Pure: time is passed in (monotonic seconds). ``PolledDeviceConfig`` holds
the two settings for every polled kind's config.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from drivers.base import DeviceConfigBase

OFFLINE_AFTER_S = 3.0
"""Default silence before a polled device is called offline (issue 9 item 10)."""


@dataclass(slots=True)
class Liveness:
    """Counts failed polls and the silence since the device last answered."""

    after_failures: int
    after_s: float
    failures: int = 0
    silent_since: float | None = None
    """Monotonic time of the last answer, or of the first failure when none came yet."""

    def answered(self, now: float) -> None:
        """The device answered (even with an exception): it is there."""
        self.failures = 0
        self.silent_since = now

    def failed(self, now: float) -> bool:
        """One more failed poll; return whether the device is now offline."""
        self.failures += 1
        if self.silent_since is None:
            self.silent_since = now
        return self.failures >= self.after_failures and now - self.silent_since >= self.after_s


class PolledDeviceConfig(DeviceConfigBase):
    """The ``devices[]`` fields of a polled device's liveness (a door node, a temperature gate)."""

    offline_after_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Consecutive failed polls before the device is offline "
        "(and offline_after_s of silence too).",
    )
    offline_after_s: float = Field(
        default=OFFLINE_AFTER_S,
        gt=0,
        le=3600,
        description="Silence before the device is offline: a noise burst that costs a few "
        "transactions is not an outage.",
    )

    def liveness(self) -> Liveness:
        """A fresh ``Liveness`` with these settings."""
        return Liveness(self.offline_after_failures, self.offline_after_s)
