"""The card table planned for a controller: rounding inward, and what does not fit."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from drivers.access_rules import CardEntry, Profile
from drivers.uhppote_cards import LAST_PROFILE_ID, OPEN_END, OPEN_START, plan_table, window

DOORS = {1: "gate-east", 2: "gate-west"}
SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = dt.date(2026, 12, 1)


def at(text: str, zone: dt.tzinfo = SHANGHAI) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def entry(card: str = "0A", **kw: object) -> CardEntry:
    values: dict[str, object] = {
        "card": card,
        "holder": None,
        "doors": None,
        "valid_from": None,
        "until": None,
        "profile": None,
    }
    values.update(kw)
    return CardEntry(**values)  # type: ignore[arg-type]


def test_window_rounds_inward_in_the_site_zone() -> None:
    # 2026-03-01 00:00 local is a whole day; 08:00 is not, so the card starts the next day.
    assert window(entry(valid_from=at("2026-03-01T00:00")), SHANGHAI) == (
        dt.date(2026, 3, 1),
        OPEN_END,
    )
    assert window(entry(valid_from=at("2026-03-01T08:00")), SHANGHAI)[0] == dt.date(2026, 3, 2)  # type: ignore[index]
    # until is exclusive: a card until 2027-07-01 00:00 or 16:00 ends on 06-30 / 06-30.
    assert window(entry(until=at("2027-07-01T00:00")), SHANGHAI) == (
        OPEN_START,
        dt.date(2027, 6, 30),
    )
    assert window(entry(until=at("2027-07-01T16:00")), SHANGHAI) == (
        OPEN_START,
        dt.date(2027, 6, 30),
    )
    # Less than a whole day: nothing fits.
    assert (
        window(entry(valid_from=at("2026-05-01T10:00"), until=at("2026-05-02T09:00")), SHANGHAI)
        is None
    )
    # The same instant in UTC is another local day in Shanghai.
    utc_midnight = at("2026-03-01T00:00", dt.UTC)
    assert window(entry(valid_from=utc_midnight), SHANGHAI)[0] == dt.date(2026, 3, 2)  # type: ignore[index]


def test_a_card_listed_twice_keeps_its_first_line_and_counts_the_other() -> None:
    plan = plan_table(
        [entry(doors=("gate-east",)), entry(doors=("gate-west",))], {}, DOORS, SHANGHAI, TODAY
    )
    assert plan.cards[0x0A].doors == (1, 0, 0, 0)
    assert plan.skipped_repeat == 1


def test_profiles_that_do_not_fit_the_ids_are_skipped_with_their_cards() -> None:
    # Seven different days and 60 closed dates: 7 x 61 records, more than 2..254 holds.
    busy = Profile(
        weekly=tuple(((d * 60, d * 60 + 30),) for d in range(7)),
        closed_dates=frozenset(
            (TODAY + dt.timedelta(days=2 * n + 1)).isoformat() for n in range(60)
        ),
    )
    small = Profile(weekly=(((480, 1020),),) * 5 + ((), ()), closed_dates=frozenset())
    plan = plan_table(
        [entry("0A", profile="busy"), entry("0B", profile="small")],
        {"busy": busy, "small": small},
        DOORS,
        SHANGHAI,
        TODAY,
    )
    assert plan.skipped_profile == 1
    assert 0x0A not in plan.cards
    assert plan.cards[0x0B].doors[0] >= 2
    assert max(plan.profiles) <= LAST_PROFILE_ID


def test_past_closed_dates_cost_nothing() -> None:
    profile = Profile(weekly=(((0, 1440),),) * 7, closed_dates=frozenset({"2020-01-01"}))
    plan = plan_table([entry(profile="p")], {"p": profile}, DOORS, SHANGHAI, TODAY)
    assert len(plan.profiles) == 1
    (record,) = plan.profiles.values()
    assert record.segments == ((dt.time(0, 0), dt.time(23, 59)),)
    assert record.weekdays == (True,) * 7
