"""The card table a UHPPOTE controller should hold, from an access list (pure: no I/O).

Issue 11, "Card tables equal to the platform's list". What the controller can
hold is narrower than the contract's entry, so everything is rounded inward:
the controller never admits anyone the list would not.

- Card ids: the list's hex as a 32-bit number (``hex_to_card``). Longer ids,
  and the numbers the protocol reserves, do not fit: skipped and counted.
- Doors: the entry's door ids that are on this controller (``None``: all of
  them). An entry for none of this controller's doors is simply not here.
- Validity: dates only. ``from`` (inclusive) becomes its local date when it
  is local midnight, else the next day; ``until`` (exclusive) becomes the day
  before its local date. An entry whose window holds no whole day is skipped.
- Profiles: each contract profile becomes a chain of controller profiles
  (ids 2..254, linked; a swipe passes if any in the chain allows it): one per
  group of weekdays with the same segments, three segments each, each copy
  bounded to a date range that leaves out the profile's future closed dates.
  A segment ``[start, end)`` becomes ``start``..``end - 1 minute`` (the
  controller's end is inclusive). Entries whose profile does not fit in the
  ids left are skipped and counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from drivers.access_rules import CardEntry, Profile
from drivers.uhppote_events import hex_to_card

FIRST_PROFILE_ID = 2
LAST_PROFILE_ID = 254
SEGMENTS_PER_PROFILE = 3
OPEN_START = dt.date(2000, 1, 1)  # "no from": the earliest date worth writing
OPEN_END = dt.date(2099, 12, 31)  # "no until"
ALWAYS = 1  # door byte: any time


@dataclass(frozen=True, slots=True)
class CardRecord:
    """One card as put-card writes it (and get-card reads it back)."""

    number: int
    start: dt.date
    end: dt.date
    doors: tuple[int, int, int, int]  # door 1..4: 0 none, 1 always, 2..254 profile id


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One controller time profile (0x88)."""

    profile_id: int
    start: dt.date
    end: dt.date
    weekdays: tuple[bool, bool, bool, bool, bool, bool, bool]
    segments: tuple[tuple[dt.time, dt.time], ...]
    linked: int


@dataclass(slots=True)
class TablePlan:
    """The table to hold, and what was left out and why."""

    cards: dict[int, CardRecord] = field(default_factory=dict)
    profiles: dict[int, ProfileRecord] = field(default_factory=dict)
    skipped_id: int = 0  # card id does not fit 32 bits (or is reserved)
    skipped_window: int = 0  # no whole day in its validity
    skipped_profile: int = 0  # its profile did not fit in ids 2..254
    skipped_repeat: int = 0  # a card listed twice (a local file): the first line is kept

    @property
    def skipped(self) -> int:
        return self.skipped_id + self.skipped_window + self.skipped_profile + self.skipped_repeat


def _local(wall: float, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall, zone)


def window(entry: CardEntry, zone: dt.tzinfo) -> tuple[dt.date, dt.date] | None:
    """The whole local days inside the entry's ``[from, until)``, or None."""
    start = OPEN_START
    if entry.valid_from is not None:
        local = _local(entry.valid_from, zone)
        start = local.date()
        if local.time() != dt.time(0):
            start += dt.timedelta(days=1)
    end = OPEN_END
    if entry.until is not None:
        end = _local(entry.until, zone).date() - dt.timedelta(days=1)
    start, end = max(start, OPEN_START), min(end, OPEN_END)
    return (start, end) if start <= end else None


def _minute(m: int) -> dt.time:
    return dt.time(m // 60, m % 60)


def _date_ranges(closed: Iterable[str], today: dt.date) -> list[tuple[dt.date, dt.date]]:
    """Date ranges from ``today`` to the open end that leave out the closed dates."""
    ranges: list[tuple[dt.date, dt.date]] = []
    start = OPEN_START
    for text in sorted(closed):
        day = dt.date.fromisoformat(text)
        if day < today:
            continue
        if start <= day - dt.timedelta(days=1):
            ranges.append((start, day - dt.timedelta(days=1)))
        start = day + dt.timedelta(days=1)
    ranges.append((start, OPEN_END))
    return ranges


def profile_chain(profile: Profile, first_id: int, today: dt.date) -> list[ProfileRecord]:
    """The linked controller profiles for one contract profile, ids from ``first_id``."""
    groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
    for day, segments in enumerate(profile.weekly):
        if segments:
            groups.setdefault(tuple(segments), []).append(day)
    shapes: list[tuple[tuple[bool, ...], tuple[tuple[dt.time, dt.time], ...]]] = []
    for minutes, days in groups.items():
        flags = tuple(d in days for d in range(7))
        inclusive = [(_minute(a), _minute(b - 1)) for a, b in minutes]
        for i in range(0, len(inclusive), SEGMENTS_PER_PROFILE):
            shapes.append((flags, tuple(inclusive[i : i + SEGMENTS_PER_PROFILE])))
    if not shapes:  # a profile with no time at all: one record that allows nothing
        shapes.append(((False,) * 7, ()))
    records: list[ProfileRecord] = []
    for start, end in _date_ranges(profile.closed_dates, today):
        for flags, times in shapes:
            pid = first_id + len(records)
            records.append(
                ProfileRecord(pid, start, end, flags, times, 0)  # type: ignore[arg-type]
            )
    # Chain them: each links to the next, the last to none.
    return [
        ProfileRecord(
            r.profile_id,
            r.start,
            r.end,
            r.weekdays,
            r.segments,
            records[i + 1].profile_id if i + 1 < len(records) else 0,
        )
        for i, r in enumerate(records)
    ]


def plan_table(
    entries: Iterable[CardEntry],
    profiles: Mapping[str, Profile],
    doors: Mapping[int, str],
    zone: dt.tzinfo,
    today: dt.date,
) -> TablePlan:
    """The card table and profiles one controller (door number -> door id) should hold."""
    plan = TablePlan()
    numbers = {door: number for number, door in doors.items()}
    profile_ids: dict[str, int | None] = {}
    next_id = FIRST_PROFILE_ID
    for name in sorted(profiles):
        chain = profile_chain(profiles[name], next_id, today)
        if next_id + len(chain) - 1 > LAST_PROFILE_ID:
            profile_ids[name] = None
            continue
        profile_ids[name] = next_id
        plan.profiles.update((r.profile_id, r) for r in chain)
        next_id += len(chain)
    seen: set[int] = set()
    for entry in entries:
        here = (
            list(doors)
            if entry.doors is None
            else [numbers[d] for d in entry.doors if d in numbers]
        )
        if not here:
            continue
        number = hex_to_card(entry.card)
        if number is None:
            plan.skipped_id += 1
            continue
        if number in seen:
            plan.skipped_repeat += 1
            continue
        seen.add(number)
        days = window(entry, zone)
        if days is None:
            plan.skipped_window += 1
            continue
        access = ALWAYS
        if entry.profile is not None:
            pid = profile_ids.get(entry.profile)
            if pid is None:
                plan.skipped_profile += 1
                continue
            access = pid
        door_bytes = tuple(access if n in here else 0 for n in range(1, 5))
        plan.cards[number] = CardRecord(number, days[0], days[1], door_bytes)  # type: ignore[arg-type]
    return plan
