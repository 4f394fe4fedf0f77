"""What a UHPPOTE controller's event record means for the contract (pure: no I/O, no clock).

The frames themselves are decoded by the ``uhppoted`` library; this module
covers what it leaves to the caller (PROTOCOL-UHPPOTE.md §2, §5, §8):

- classify by reason code, not by event type (the type is unreliable: the
  reference simulator reports granted swipes as type 2);
- the three forms of "empty" timestamp, of which the library turns
  ``00 01 01 01 00 00 00`` (Go's zero time) into a real ``0001-01-01``;
- controller local wall time to UTC in the gateway's zone, an ambiguous time
  (a DST fold) taking the earlier offset;
- the controller's denial reasons mapped onto the contract's "Decisions"
  (``controller_rule`` with ``controller_reason`` where nothing matches);
- card ids: the contract's upper-case hex (no leading ``00`` byte) to the
  controller's 32-bit number and back.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

CARD_MAX = 0xFFFFFFFF
# uhppote-core refuses these card numbers (PROTOCOL-UHPPOTE.md, 0x50).
_UNUSABLE_CARDS = frozenset({0, 0xFFFFFFFF, 0x00FFFFFF})
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


class EventClass(StrEnum):
    """What a controller event becomes."""

    DOOR = "door"  # a door.event reading
    STATUS = "status"  # a device.status reading (power on, reset, warnings)


# Reason codes (PROTOCOL-UHPPOTE.md §5).
REASON_POWER_ON = 28
REASON_RESET = 29
_DOOR_REASONS: dict[int, str] = {
    20: "exit_button",
    23: "opened",
    24: "closed",
    25: "granted",  # the supervisor password opened the door
    37: "held_open",
    38: "forced",
    44: "remote_open",
    45: "remote_open",
}
# Denial reasons that match a contract reason; the rest are controller_rule.
_DENIAL_REASONS: dict[int, str] = {
    6: "door_not_allowed",
    11: "door_locked",
    13: "outside_profile",
    15: "outside_profile",
    18: "not_listed",
}
_WARNINGS: dict[int, str] = {
    REASON_POWER_ON: "power on",
    REASON_RESET: "controller reset",
    30: "button disabled by task",
    31: "button refused: forced lock",
    32: "button refused: offline",
    33: "button refused: interlock",
    34: "threat",
    39: "fire",
    40: "forced close",
    41: "anti-theft",
    42: "24x7 zone",
    43: "emergency call",
}
ALARM_WARNINGS = frozenset({34, 39, 41, 43})


@dataclass(frozen=True, slots=True)
class Meaning:
    """A controller event read for the contract."""

    cls: EventClass
    event: str | None = None  # door.event ``event`` for DOOR
    reason: str | None = None  # contract decision reason, for granted / denied
    controller_reason: int | None = None  # set when reason is controller_rule
    card_matters: bool = False
    detail: str = ""


def classify(reason: int, granted: bool) -> Meaning:
    """The contract meaning of a stored event, by its reason code and granted flag."""
    if 1 <= reason <= 19:
        if granted:
            return Meaning(EventClass.DOOR, "granted", "listed", card_matters=True)
        mapped = _DENIAL_REASONS.get(reason)
        if mapped is not None:
            return Meaning(EventClass.DOOR, "denied", mapped, card_matters=True)
        return Meaning(
            EventClass.DOOR,
            "denied",
            "controller_rule",
            controller_reason=reason,
            card_matters=True,
        )
    event = _DOOR_REASONS.get(reason)
    if event == "granted":
        return Meaning(EventClass.DOOR, "granted", "controller_rule", controller_reason=reason)
    if event is not None:
        return Meaning(EventClass.DOOR, event)
    detail = _WARNINGS.get(reason, "controller event")
    return Meaning(EventClass.STATUS, detail=f"{detail} (reason {reason})")


def is_empty_timestamp(value: dt.datetime | None) -> bool:
    """True for the three "no time" forms (all zeros and ``20 00..`` decode to None)."""
    return value is None or (value.year, value.month, value.day) == (1, 1, 1)


def controller_time_to_wall(value: dt.datetime, zone: dt.tzinfo) -> float:
    """Seconds since the epoch of a controller's local wall time in ``zone``.

    ``fold=0`` makes an ambiguous time (the repeated hour when clocks go
    back) take the earlier offset; a time skipped when clocks go forward is
    read with the offset before the change.
    """
    return value.replace(tzinfo=zone, fold=0).timestamp()


def wall_to_controller_time(wall_s: float, zone: dt.tzinfo) -> dt.datetime:
    """The controller's local wall time (naive, to the second) for an instant."""
    local = dt.datetime.fromtimestamp(wall_s, zone).replace(tzinfo=None)
    return local.replace(microsecond=0)


def card_to_hex(number: int) -> str | None:
    """The contract's card id of a controller card number (``None`` for no card)."""
    if number <= 0:
        return None
    text = f"{number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def hex_to_card(card: str) -> int | None:
    """The controller's card number for a contract card id, or None when it does not fit.

    Ids of more than 4 bytes, and the numbers the protocol reserves, do not
    fit: they are skipped and counted, never truncated.
    """
    if not _HEX.match(card) or len(card) > 8:
        return None
    number = int(card, 16)
    if number in _UNUSABLE_CARDS or card.startswith("00"):
        return None
    return number
