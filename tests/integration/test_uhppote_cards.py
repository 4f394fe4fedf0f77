"""Card tables kept equal to the access list, over real loopback UDP."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from drivers.access_rules import CardEntry, Profile
from drivers.sim.uhppote import UhppoteSimulator
from drivers.uhppote_cards import OPEN_END, OPEN_START, plan_table
from drivers.uhppote_events import hex_to_card
from tests.uhppote_rig import ListedAccess, running

pytestmark = pytest.mark.integration

DOORS = {1: "gate-east", 2: "gate-west"}
DAY = Profile(
    weekly=(((360, 1380),),) * 5 + (((480, 720), (840, 1440)),) * 2,
    closed_dates=frozenset({"2099-12-31"}),
)


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def make_list(n: int, seed: int = 7) -> dict[str, CardEntry]:
    rng = random.Random(seed)
    cards: dict[str, CardEntry] = {}
    while len(cards) < n:
        card = f"{rng.randrange(0x01000000, 0xFF000000):08X}"
        doors = rng.choice([None, ("gate-east",), ("gate-west",), ("gate-east", "gate-west")])
        cards[card] = CardEntry(
            card=card,
            holder=None,
            doors=doors,
            valid_from=rng.choice([None, ts("2026-01-01T00:00:00"), ts("2026-03-01T08:00:00")]),
            until=rng.choice([None, ts("2027-06-30T16:00:00"), ts("2028-01-01T00:00:00")]),
            profile=rng.choice([None, "day"]),
        )
    return cards


def assert_controller_equals(sim: UhppoteSimulator, listed: dict[str, CardEntry]) -> None:
    """Card by card against the list itself (not against the driver's own plan)."""
    expected: set[int] = set()
    for entry in listed.values():
        number = hex_to_card(entry.card)
        assert number is not None
        expected.add(number)
        held = sim.state.cards[number]
        doors = entry.doors or tuple(DOORS.values())
        for n, door in DOORS.items():
            if door in doors:
                assert held.doors[n - 1] == (1 if entry.profile is None else held.doors[n - 1])
                assert held.doors[n - 1] != 0
                if entry.profile is not None:
                    assert held.doors[n - 1] >= 2
            else:
                assert held.doors[n - 1] == 0
        # Inward rounding: from 08:00 starts the next day; until midnight ends the day before.
        start = {
            None: OPEN_START,
            ts("2026-01-01T00:00:00"): dt.date(2026, 1, 1),
            ts("2026-03-01T08:00:00"): dt.date(2026, 3, 2),
        }[entry.valid_from]
        end = {
            None: OPEN_END,
            ts("2027-06-30T16:00:00"): dt.date(2027, 6, 29),
            ts("2028-01-01T00:00:00"): dt.date(2027, 12, 31),
        }[entry.until]
        assert (held.start, held.end) == (start, end)
    assert set(sim.state.cards) == expected


async def test_two_thousand_cards_reach_the_controller_equal_then_a_delta_costs_its_size() -> None:
    listed = make_list(2000)
    access = ListedAccess(list(listed.values()), {"day": DAY}, version=41)
    async with running(access=access, card_check_s=0.2) as rig:
        sync = rig.driver.card_sync
        assert sync is not None
        await rig.sink.until(lambda: sync.passes >= 1, timeout=60)
        assert_controller_equals(rig.sim, listed)
        assert rig.driver.list_version == 41
        assert rig.sim.state.profiles  # "day" as a chain of controller profiles
        # A swipe now carries the version written.
        number = hex_to_card(next(iter(listed)))
        assert number is not None
        rig.sim.swipe(number, 1)
        await rig.sink.until(lambda: bool(rig.sink.doors()))
        assert rig.sink.doors()[0]["list_version"] == 41

        # A delta of 10: 5 changed, 3 added, 2 removed.
        before = rig.sim.state.requests.copy()
        changed = dict(listed)
        keys = list(changed)
        for card in keys[:5]:
            changed[card] = CardEntry(card, None, ("gate-west",), None, None, None)
        for card in keys[5:7]:
            del changed[card]
        for i in range(3):
            card = f"{0x0A000000 + i:08X}"
            changed[card] = CardEntry(card, None, None, None, None, None)
        access.replace(42, changed)
        await rig.sink.until(lambda: sync.passes >= 2, timeout=30)
        writes = sum(rig.sim.state.requests[c] - before[c] for c in (0x50, 0x52, 0x88))
        assert writes == 10
        assert_controller_equals(rig.sim, changed)
        assert rig.driver.list_version == 42

        # A reset controller (table wiped) is refilled.
        rig.sim.reset()
        await rig.sink.until(lambda: sync.passes >= 3, timeout=60)
        assert_controller_equals(rig.sim, changed)


async def test_entries_that_do_not_fit_are_skipped_and_counted() -> None:
    entries = [
        CardEntry("04A1B2C3D4", None, None, None, None, None),  # 5 bytes
        CardEntry("FFFFFFFF", None, None, None, None, None),  # reserved
        CardEntry("0A0B0C", None, None, ts("2026-05-01T10:00:00"), ts("2026-05-02T00:00:00"), None),
        CardEntry("0A0B0D", None, ("elsewhere",), None, None, None),  # not this controller's door
        CardEntry("0A0B0E", None, None, None, None, None),
    ]
    # A long check interval: the first pass must not wait for it once the controller is online.
    async with running(access=ListedAccess(entries, version=3), card_check_s=60) as rig:
        sync = rig.driver.card_sync
        assert sync is not None
        await rig.sink.until(lambda: sync.passes >= 1, timeout=20)
        assert set(rig.sim.state.cards) == {0x0A0B0E}
        done = next(s for s in rig.sink.statuses() if "card table synced" in s["detail"])
        assert done["skipped"] == {"card_id": 2, "window": 1, "profile": 0, "repeat": 0}
        assert rig.driver.health.counters["cards_skipped"] == 3


def test_profile_days_and_closed_dates_round_inward() -> None:
    plan = plan_table(
        [CardEntry("0A", None, None, None, None, "day")],
        {
            "day": Profile(
                weekly=(((480, 1440),),) + ((),) * 6, closed_dates=frozenset({"2026-12-25"})
            )
        },
        DOORS,
        dt.UTC,
        dt.date(2026, 12, 1),
    )
    records = sorted(plan.profiles.values(), key=lambda r: r.profile_id)
    assert [(r.start, r.end) for r in records] == [
        (OPEN_START, dt.date(2026, 12, 24)),
        (dt.date(2026, 12, 26), OPEN_END),
    ]
    assert records[0].segments == ((dt.time(8, 0), dt.time(23, 59)),)
    assert records[0].weekdays == (True,) + (False,) * 6
    assert records[0].linked == records[1].profile_id and records[1].linked == 0
    assert plan.cards[0x0A].doors == (2, 2, 0, 0)


async def test_a_generic_denial_of_a_held_card_says_expired_not_unlisted() -> None:
    entries = [
        CardEntry("0A0B0C", None, None, None, ts("2026-01-01T00:00:00"), None),  # expired
        CardEntry("0A0B0D", None, None, None, None, None),
    ]
    async with running(access=ListedAccess(entries, version=5), card_check_s=60) as rig:
        sync = rig.driver.card_sync
        assert sync is not None
        await rig.sink.until(lambda: sync.passes >= 1)
        rig.sim.swipe(0x0A0B0C, 1)  # the controller checks dates: reason 18
        rig.sim.swipe(0x0A0B0E, 1)  # not on the controller at all: reason 18 too
        await rig.sink.until(lambda: len(rig.sink.doors("denied")) >= 2)
        reasons = [(d["card"], d["reason"]) for d in rig.sink.doors("denied")]
        assert reasons == [("0A0B0C", "expired"), ("0A0B0E", "not_listed")]
        assert all(d["list_version"] == 5 for d in rig.sink.doors("denied"))
