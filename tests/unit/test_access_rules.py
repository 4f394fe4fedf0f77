"""The one decision function: the contract's order of reasons, profiles, time zones."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from drivers.access_rules import (
    CardEntry,
    Decision,
    DecisionReason,
    Profile,
    decide,
    normalise_card,
    parse_hhmm,
)

R = DecisionReason
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def profile(weekly: Mapping[str, list[tuple[str, str]]], closed: tuple[str, ...] = ()) -> Profile:
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return Profile(
        tuple(
            tuple((parse_hhmm(a), parse_hhmm(b)) for a, b in weekly.get(day, [])) for day in days
        ),
        frozenset(closed),
    )


DAY = profile(
    {"mon": [("06:00", "23:00")], "sat": [("08:00", "12:00"), ("14:00", "24:00")]},
    ("2026-12-31",),
)
PROFILES = {"day": DAY}
MONDAY_NOON = ts("2026-11-30T12:00")  # a Monday


def entry(**kw: object) -> CardEntry:
    base: dict[str, object] = {
        "card": "04A1B2C3",
        "holder": "r-1",
        "doors": None,
        "valid_from": None,
        "until": None,
        "profile": None,
    }
    base.update(kw)
    return CardEntry(**base)  # type: ignore[arg-type]


def run(
    entries: tuple[CardEntry, ...],
    *,
    now: float = MONDAY_NOON,
    synced: bool = True,
    locked: bool = False,
    door: str = "door-east-1",
    tz: ZoneInfo = SHANGHAI,
    profiles: Mapping[str, Profile] = PROFILES,
) -> Decision:
    return decide(
        entries,
        door=door,
        door_refuses_cards=locked,
        profiles=profiles,
        list_version=42,
        now=now,
        clock_synced=synced,
        tz=tz,
    )


def test_listed_card_is_granted_with_the_list_version() -> None:
    assert run((entry(),)) == Decision(True, R.LISTED, 42)


@pytest.mark.parametrize(
    ("entries", "kwargs", "reason"),
    [
        ((entry(),), {"locked": True}, R.DOOR_LOCKED),
        ((), {"locked": True}, R.DOOR_LOCKED),  # locked comes before not_listed
        ((), {}, R.NOT_LISTED),
        ((entry(doors=("door-west-1",)),), {}, R.DOOR_NOT_ALLOWED),
        ((entry(valid_from=MONDAY_NOON + 1),), {}, R.NOT_YET_VALID),
        ((entry(until=MONDAY_NOON),), {}, R.EXPIRED),  # until is exclusive
        ((entry(until=MONDAY_NOON - 1),), {"synced": False}, R.EXPIRED),
        ((entry(profile="day"),), {"synced": False}, R.CLOCK_UNSYNCED),
        ((entry(profile="day"),), {"now": ts("2026-12-31T12:00")}, R.CLOSED_DATE),
        ((entry(profile="day"),), {"now": ts("2026-11-30T23:00")}, R.OUTSIDE_PROFILE),
        ((entry(profile="day"),), {"now": ts("2026-12-01T12:00")}, R.OUTSIDE_PROFILE),  # tue
        ((entry(profile="gone"),), {}, R.OUTSIDE_PROFILE),
    ],
)
def test_each_denial_reason(
    entries: tuple[CardEntry, ...], kwargs: dict[str, object], reason: DecisionReason
) -> None:
    decision = run(entries, **kwargs)  # type: ignore[arg-type]
    assert decision == Decision(False, reason, 42)


def test_order_door_before_validity_before_clock() -> None:
    everything_wrong = entry(
        doors=("door-west-1",), valid_from=MONDAY_NOON + 1, until=MONDAY_NOON + 2, profile="day"
    )
    assert run((everything_wrong,), synced=False).reason is R.DOOR_NOT_ALLOWED
    right_door = entry(valid_from=MONDAY_NOON + 1, profile="day")
    assert run((right_door,), synced=False).reason is R.NOT_YET_VALID


def test_unsynced_clock_still_grants_an_entry_without_profile() -> None:
    assert run((entry(until=MONDAY_NOON + 60),), synced=False).granted


def test_segment_edges_and_24_00() -> None:
    e = (entry(profile="day"),)
    assert run(e, now=ts("2026-11-30T06:00")).granted
    assert not run(e, now=ts("2026-11-30T05:59:59")).granted
    assert run(e, now=ts("2026-11-30T22:59:59")).granted
    assert run(e, now=ts("2026-12-05T23:59:59")).granted  # saturday until 24:00
    assert run(e, now=ts("2026-12-05T12:00")).reason is R.OUTSIDE_PROFILE


def test_profile_is_judged_in_the_site_zone_not_utc() -> None:
    # 23:30 UTC on Sunday is 07:30 Monday in Shanghai: inside "mon 06:00-23:00".
    sunday_utc = datetime(2026, 11, 29, 23, 30, tzinfo=UTC).timestamp()
    assert run((entry(profile="day"),), now=sunday_utc).granted
    assert run((entry(profile="day"),), now=sunday_utc, tz=ZoneInfo("UTC")).reason is (
        R.OUTSIDE_PROFILE
    )


def test_profile_across_a_dst_change() -> None:
    # Berlin leaves summer time on Sunday 2026-10-25 at 03:00 CEST -> 02:00 CET.
    sunday = profile({"sun": [("08:00", "09:00")]})
    profiles = {"p": sunday}
    eight_thirty_cet = ts("2026-10-25T08:30", BERLIN)
    assert datetime(2026, 10, 25, 7, 30, tzinfo=UTC).timestamp() == eight_thirty_cet
    a_week_before = ts("2026-10-18T08:30", BERLIN)  # CEST: 06:30 UTC
    assert eight_thirty_cet - a_week_before == 7 * 86400 + 3600
    for now in (eight_thirty_cet, a_week_before):
        assert run((entry(profile="p"),), now=now, tz=BERLIN, profiles=profiles).granted
    # 07:30 UTC on the 18th is 09:30 CEST: outside, although it is 08:30 on the 25th.
    late = run((entry(profile="p"),), now=a_week_before + 3600, tz=BERLIN, profiles=profiles)
    assert late.reason is R.OUTSIDE_PROFILE


def test_several_entries_grant_if_any_and_report_the_furthest_denial() -> None:
    other_door = entry(doors=("door-west-1",))
    expired_here = entry(until=MONDAY_NOON - 1)
    assert run((other_door, expired_here)).reason is R.EXPIRED
    assert run((other_door, entry())).granted


@pytest.mark.parametrize(
    ("raw", "card"),
    [("00997AA0", "997AA0"), ("04a1b2c3", "04A1B2C3"), ("0000", None), ("ABC", None), ("", None)],
)
def test_normalise_card(raw: str, card: str | None) -> None:
    assert normalise_card(raw) == card


def test_parse_hhmm() -> None:
    assert parse_hhmm("24:00") == 1440
    assert parse_hhmm("06:05") == 365
    for bad in ("24:01", "6:00", "25:00", "12:60", "12:00:00"):
        with pytest.raises(ValueError, match=r"HH:MM|past"):
            parse_hhmm(bad)
