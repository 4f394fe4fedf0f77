"""Who may enter: the access-list interface every door driver decides through.

CONTRACT.md 1.1, "Access lists" and "Decisions". A list is anything that
implements ``AccessList``: the platform's signed, versioned list kept in
SQLite by the gateway (``gateway.access``), or the local text file of small
sites (``drivers.access_file``). Drivers never import the gateway; they get
an ``AccessList`` and call the one pure ``decide`` function, so the rules live
here once:

- a door driver (the door node) looks a card up and calls ``decide`` with the
  door's mode, a trusted "now" and whether the clock is synced;
- a networked controller that decides by itself syncs from ``entries()`` and
  ``profiles()`` and reports the ``list_version`` it last wrote.

``decide`` applies the contract's order of denials: ``door_locked``,
``not_listed``, ``door_not_allowed``, ``not_yet_valid``, ``expired``,
``clock_unsynced`` (an entry with a profile needs the time of day, which an
unsynced clock cannot give), ``closed_date``, ``outside_profile``; a grant is
``listed``. Profiles are judged in the site's time zone at the wall time of
the instant judged (``zoneinfo``, with the pinned ``tzdata`` package so a Pi
without system zone data still decides right across DST changes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Protocol

from drivers.base import Clock

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Profile day keys, in ``datetime.weekday()`` order."""

MINUTES_PER_DAY = 24 * 60

_CARD_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")
_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


class DecisionReason(StrEnum):
    """``reason`` of a ``granted``/``denied`` door event (CONTRACT.md, "Decisions")."""

    LISTED = "listed"
    DOOR_LOCKED = "door_locked"
    NOT_LISTED = "not_listed"
    DOOR_NOT_ALLOWED = "door_not_allowed"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    CLOCK_UNSYNCED = "clock_unsynced"
    CLOSED_DATE = "closed_date"
    OUTSIDE_PROFILE = "outside_profile"
    CONTROLLER_RULE = "controller_rule"


# The per-entry denials in the contract's order: with several entries for one
# card (a local file may list a card on several lines), the denial reported is
# the one of the entry that got furthest.
_ENTRY_DENIALS = (
    DecisionReason.DOOR_NOT_ALLOWED,
    DecisionReason.NOT_YET_VALID,
    DecisionReason.EXPIRED,
    DecisionReason.CLOCK_UNSYNCED,
    DecisionReason.CLOSED_DATE,
    DecisionReason.OUTSIDE_PROFILE,
)


@dataclass(frozen=True, slots=True)
class CardEntry:
    """One card of an access list (CONTRACT.md "Card entry").

    ``valid_from`` is inclusive and ``until`` exclusive, in seconds since the
    epoch; ``None`` means unbounded. ``doors`` is sorted and unique, ``None``
    for every door of the gateway. ``profile`` names a ``Profile`` of the same
    list, ``None`` for any time of day.
    """

    card: str
    holder: str | None
    doors: tuple[str, ...] | None
    valid_from: float | None
    until: float | None
    profile: str | None


@dataclass(frozen=True, slots=True)
class Profile:
    """When a profile allows entry, in the site's local wall time.

    ``weekly[d]`` holds the segments of weekday ``d`` (0 = Monday) as
    ``(start, end)`` minutes since local midnight, ``end`` exclusive and at
    most 1440; ``closed_dates`` holds local dates ``YYYY-MM-DD`` with no access.
    """

    weekly: tuple[tuple[tuple[int, int], ...], ...]
    closed_dates: frozenset[str]

    def __post_init__(self) -> None:
        if len(self.weekly) != len(WEEKDAYS):
            raise ValueError("a profile has exactly seven days")
        for segments in self.weekly:
            for start, end in segments:
                if not 0 <= start < end <= MINUTES_PER_DAY:
                    raise ValueError(f"bad segment {start}..{end}")

    def allows(self, local: datetime) -> bool:
        """Whether the local wall time ``local`` falls in a segment of its weekday."""
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly[local.weekday()])

    def closed_on(self, local: datetime) -> bool:
        return local.date().isoformat() in self.closed_dates


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one card at one door, with the list version it was decided with."""

    granted: bool
    reason: DecisionReason
    list_version: int | None


class AccessList(Protocol):
    """An access list a door driver can decide with (module docstring)."""

    @property
    def version(self) -> int | None:
        """The version held (0 before any list), ``None`` for a local file."""
        ...

    def refresh(self) -> None:
        """Pick up changes made outside this process (cheap; called every poll)."""
        ...

    def lookup(self, card_hex: str) -> CardEntry | None:
        """The entry of a normalised card id (``normalise_card``), or None."""
        ...

    def lookup_all(self, card_hex: str) -> tuple[CardEntry, ...]:
        """Every entry of a card: one at most, except a local file's repeated lines."""
        ...

    def entries(self) -> Iterator[CardEntry]:
        """Every entry, sorted by card (to sync a networked controller)."""
        ...

    def profiles(self) -> Mapping[str, Profile]:
        """The profiles held, by name."""
        ...


def normalise_card(raw: str) -> str | None:
    """A reader's card id as lists hold it: upper-case hex, leading ``00`` bytes dropped.

    Returns None for an id that cannot be a card (not hex, an odd number of
    digits, or all zeros). Length is left to the list: a platform list holds
    ids of at most 10 bytes, a local file up to 20.
    """
    card = raw.strip().upper()
    while card.startswith("00"):
        card = card[2:]
    return card if _CARD_HEX.fullmatch(card) else None


def parse_hhmm(text: str) -> int:
    """``HH:MM`` (``24:00`` allowed) as minutes since midnight.

    Raises:
        ValueError: not ``HH:MM`` or past ``24:00``.
    """
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"not HH:MM: {text!r}")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > MINUTES_PER_DAY:
        raise ValueError(f"past 24:00: {text!r}")
    return minutes


def _entry_denial(
    entry: CardEntry,
    *,
    door: str,
    profiles: Mapping[str, Profile],
    now: float,
    clock_synced: bool,
    tz: tzinfo,
) -> DecisionReason | None:
    if entry.doors is not None and door not in entry.doors:
        return DecisionReason.DOOR_NOT_ALLOWED
    if entry.valid_from is not None and now < entry.valid_from:
        return DecisionReason.NOT_YET_VALID
    if entry.until is not None and now >= entry.until:
        return DecisionReason.EXPIRED
    if entry.profile is None:
        return None
    if not clock_synced:
        return DecisionReason.CLOCK_UNSYNCED
    profile = profiles.get(entry.profile)
    local = datetime.fromtimestamp(now, tz)
    if profile is not None and profile.closed_on(local):
        return DecisionReason.CLOSED_DATE
    if profile is None or not profile.allows(local):
        # A profile the list does not hold (the store never lets that happen) grants nothing.
        return DecisionReason.OUTSIDE_PROFILE
    return None


def decide(
    entries: Sequence[CardEntry],
    *,
    door: str,
    door_refuses_cards: bool,
    profiles: Mapping[str, Profile],
    list_version: int | None,
    now: float,
    clock_synced: bool,
    tz: tzinfo,
) -> Decision:
    """Whether a card may open ``door`` now, and why (CONTRACT.md "Decisions").

    Args:
        entries: the card's entries (``AccessList.lookup_all``); empty when not listed.
        door: the door id.
        door_refuses_cards: the door's mode refuses cards (``locked``).
        profiles: the profiles of the list the entries came from.
        list_version: the version of that list, carried into the decision.
        now: trusted "now", seconds since the epoch (CONTRACT.md, "Time when
            the clock cannot be trusted").
        clock_synced: whether the wall clock is synchronised; profiles need it.
        tz: the site's time zone.
    """
    if door_refuses_cards:
        return Decision(False, DecisionReason.DOOR_LOCKED, list_version)
    if not entries:
        return Decision(False, DecisionReason.NOT_LISTED, list_version)
    furthest = -1
    for entry in entries:
        denial = _entry_denial(
            entry, door=door, profiles=profiles, now=now, clock_synced=clock_synced, tz=tz
        )
        if denial is None:
            return Decision(True, DecisionReason.LISTED, list_version)
        furthest = max(furthest, _ENTRY_DENIALS.index(denial))
    return Decision(False, _ENTRY_DENIALS[furthest], list_version)


class TrustedTime(Protocol):
    """The gateway's trusted "now" (CONTRACT.md, "Time when the clock cannot be trusted")."""

    def now(self) -> float:
        """Seconds since the epoch, never ahead of the true time."""
        ...

    def is_synced(self) -> bool:
        """Whether the wall clock is synchronised (profiles need the time of day)."""
        ...


class SyncSource(Protocol):
    def is_synced(self) -> bool: ...


class WallTime:
    """Trusted time as the plain wall clock, synced as ``sync`` says (always, if None).

    For the local card file, tools and tests; the daemon's platform list uses
    the gateway's durable trusted clock instead.
    """

    def __init__(self, clock: Clock, sync: SyncSource | None = None) -> None:
        self._clock = clock
        self._sync = sync

    def now(self) -> float:
        return self._clock.wall()

    def is_synced(self) -> bool:
        return self._sync is None or self._sync.is_synced()


@dataclass(frozen=True, slots=True)
class DoorAccess:
    """What a door driver decides cards with: a list, trusted time and the site's zone."""

    access: AccessList
    time: TrustedTime
    tz: tzinfo

    def refresh(self) -> None:
        self.access.refresh()

    def decide(self, raw_card: str, door: str, *, door_refuses_cards: bool) -> Decision:
        """``decide`` for a card id as the reader gave it (normalised here)."""
        card = normalise_card(raw_card)
        entries = self.access.lookup_all(card) if card is not None else ()
        return decide(
            entries,
            door=door,
            door_refuses_cards=door_refuses_cards,
            profiles=self.access.profiles(),
            list_version=self.access.version,
            now=self.time.now(),
            clock_synced=self.time.is_synced(),
            tz=self.tz,
        )
