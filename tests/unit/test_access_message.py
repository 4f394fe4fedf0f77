"""Access message shapes: what is bad_schema, what is too_large (CONTRACT.md 1.1)."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.access.build import card, delta_message, snapshot_messages
from gateway.access.digest import canonical_text
from gateway.access.message import (
    AccessDelta,
    AccessErrorReason,
    AccessRefused,
    AccessSnapshotPart,
    check_utf8,
    parse_entry,
    parse_message,
    signed_bytes,
)
from gateway.commands.model import canonical_bytes

KEY = Ed25519PrivateKey.generate()
DAY = {
    "weekly": {"mon": [["06:00", "23:00"]], "sat": [["08:00", "12:00"], ["14:00", "24:00"]]},
    "closed_dates": ["2026-12-31"],
}
GOOD = card("04A1B2C3", holder="r-10293", until="2027-06-30T16:00:00.000Z", profile="day")


def a_delta(**overrides: Any) -> dict[str, Any]:
    msg = delta_message(
        gateway="north-gate-1",
        base=41,
        version=42,
        upsert=[GOOD],
        delete=["04DEAD00BEEF"],
        profiles={"day": DAY},
        key=KEY,
        key_id="platform-2026",
        issued_at=1_795_000_000.0,
    )
    msg.update(overrides)
    return msg


def a_part(**overrides: Any) -> dict[str, Any]:
    (msg,) = snapshot_messages(
        [GOOD],
        {"day": DAY},
        gateway="north-gate-1",
        version=42,
        key=KEY,
        key_id="platform-2026",
        issued_at=1_795_000_000.0,
    )
    msg.update(overrides)
    return msg


def test_the_contract_example_delta_parses() -> None:
    message = parse_message(a_delta())
    assert isinstance(message, AccessDelta)
    assert message.base == 41 and message.envelope.version == 42
    (entry,) = message.upsert
    assert entry.entry.profile == "day" and entry.entry.until == 1_814_371_200.0
    assert message.profiles["day"].profile.weekly[5] == ((480, 720), (840, 1440))


def test_a_snapshot_part_parses() -> None:
    message = parse_message(a_part())
    assert isinstance(message, AccessSnapshotPart)
    assert (message.part, message.parts) == (1, 1) and message.profiles is not None


def with_entry(**fields: Any) -> dict[str, Any]:
    entry = dict(GOOD, **fields)
    return a_delta(upsert=[entry])


def with_profile(profile: Any) -> dict[str, Any]:
    return a_delta(profiles={"day": profile})


BAD_SCHEMA = {
    "unknown top-level key": a_delta(extra=1),
    "v is 2": a_delta(v=2),
    "v is true": a_delta(v=True),
    "unknown type": a_delta(type="access.patch"),
    "version not above base": a_delta(version=41),
    "version a bool": a_delta(version=True),
    "base missing": {k: v for k, v in a_delta().items() if k != "base"},
    "upsert missing": {k: v for k, v in a_delta().items() if k != "upsert"},
    "issued_at with offset": a_delta(issued_at="2026-11-29T08:00:00.000+08:00"),
    "issued_at without ms": a_delta(issued_at="2026-11-29T08:00:00Z"),
    "sig not base64": a_delta(sig="***"),
    "bad gateway id": a_delta(gateway="North"),
    "entry with an unknown key": with_entry(name="Li Wei"),
    "entry missing a key": a_delta(upsert=[{k: v for k, v in GOOD.items() if k != "doors"}]),
    "lower-case hex": with_entry(card="04a1b2c3"),
    "padded hex": with_entry(card="0004A1B2"),
    "odd hex": with_entry(card="4A1B2C3"),
    "card over 10 bytes": with_entry(card="AA" * 11),
    "offset timestamp": with_entry(until="2027-06-30T16:00:00.000+00:00"),
    "not a real date": with_entry(until="2027-02-30T16:00:00.000Z"),
    "doors unsorted": with_entry(doors=["door-west-1", "door-east-1"]),
    "doors repeated": with_entry(doors=["door-east-1", "door-east-1"]),
    "holder empty": with_entry(holder=""),
    "holder too long": with_entry(holder="x" * 65),
    "card twice": a_delta(upsert=[GOOD, GOOD]),
    "card upserted and deleted": a_delta(delete=[GOOD["card"]]),
    "deleted twice": a_delta(delete=["0A", "0A"]),
    "profile with unknown key": with_profile(dict(DAY, holidays=[])),
    "profile unknown day": with_profile({"weekly": {"monday": []}, "closed_dates": []}),
    "segment crossing midnight": with_profile(
        {"weekly": {"mon": [["22:00", "02:00"]]}, "closed_dates": []}
    ),
    "segments overlapping": with_profile(
        {"weekly": {"mon": [["06:00", "12:00"], ["11:00", "13:00"]]}, "closed_dates": []}
    ),
    "segments unsorted": with_profile(
        {"weekly": {"mon": [["14:00", "15:00"], ["06:00", "12:00"]]}, "closed_dates": []}
    ),
    "segment past 24:00": with_profile(
        {"weekly": {"mon": [["06:00", "24:30"]]}, "closed_dates": []}
    ),
    "closed dates unsorted": with_profile(dict(DAY, closed_dates=["2026-12-31", "2026-01-01"])),
    "closed date not real": with_profile(dict(DAY, closed_dates=["2026-02-30"])),
    "profile deleted and replaced": a_delta(delete_profiles=["day"]),
    "snapshot part 2 with profiles": a_part(part=2, parts=2),
    "snapshot part 1 without profiles": {k: v for k, v in a_part().items() if k != "profiles"},
    "snapshot part above parts": a_part(part=3, parts=2),
    "snapshot empty part of many": a_part(cards=[], parts=2),
}


@pytest.mark.parametrize("name", sorted(BAD_SCHEMA))
def test_bad_schema(name: str) -> None:
    with pytest.raises(AccessRefused) as info:
        parse_message(copy.deepcopy(BAD_SCHEMA[name]))
    assert info.value.reason is AccessErrorReason.BAD_SCHEMA


def test_an_empty_list_is_one_part_without_cards() -> None:
    message = parse_message(a_part(cards=[]))
    assert isinstance(message, AccessSnapshotPart) and message.cards == ()


@pytest.mark.parametrize(
    "message",
    [
        a_delta(upsert=[card(f"{i + 256:04X}") for i in range(5001)]),
        a_delta(upsert=[card(f"{i + 256:04X}") for i in range(3000)], delete=["0A"] * 2001),
        a_part(parts=1001, part=1),
    ],
    ids=["5001 upserts", "5001 in two lists", "1001 parts"],
)
def test_too_large(message: dict[str, Any]) -> None:
    with pytest.raises(AccessRefused) as info:
        parse_message(message)
    assert info.value.reason is AccessErrorReason.TOO_LARGE
    assert info.value.version == 42


def test_exactly_5000_entries_is_allowed() -> None:
    upsert = [card(f"{i + 256:04X}") for i in range(4998)]  # + 1 delete + 1 profile
    assert isinstance(parse_message(a_delta(upsert=upsert)), AccessDelta)


_text = st.one_of(st.none(), st.text(min_size=1, max_size=64))
_times = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
    ),
)


@settings(max_examples=300)
@given(
    st.binary(min_size=1, max_size=10).filter(lambda b: b[0] != 0).map(lambda b: b.hex().upper()),
    _text,
    st.one_of(st.none(), st.lists(st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True), unique=True)),
    _times,
    _times,
    _text,
)
def test_entry_text_is_the_canonical_json(
    card_id: str,
    holder: str | None,
    doors: list[str] | None,
    valid_from: str | None,
    until: str | None,
    profile: str | None,
) -> None:
    value = card(
        card_id, holder=holder, doors=doors, valid_from=valid_from, until=until, profile=profile
    )
    try:
        expected = canonical_text(value).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(AccessRefused):
            parse_entry(value, "e", 1)
        return
    assert parse_entry(value, "e", 1).text == expected
    entry = parse_entry(value, "e", 1).entry
    assert (entry.card, entry.holder, entry.profile) == (card_id, holder, profile)


@pytest.mark.parametrize(
    "message",
    [
        a_delta(),
        a_delta(upsert=[], delete=[], delete_profiles=["night"]),
        a_part(),
        a_part(cards=[]),
        a_delta(upsert=[card("0A", holder='r-"\\u00e9\u4e2d\U0001f600</script>')]),
        a_delta(profiles={'we"ird \u4e2d': DAY}),
    ],
    ids=["delta", "empty delta", "part", "empty part", "odd holder", "odd profile name"],
)
def test_signed_bytes_equal_the_canonical_form(message: dict[str, Any]) -> None:
    parsed = parse_message(message)
    assert signed_bytes(message, parsed) == canonical_bytes(message)


def test_a_lone_surrogate_is_bad_json() -> None:
    body = json.dumps(a_delta(upsert=[card("0A", holder="x")])).replace('"x"', '"\\ud800"')
    obj = json.loads(body)
    with pytest.raises(AccessRefused) as info:
        check_utf8(body.encode(), obj)
    assert info.value.reason is AccessErrorReason.BAD_JSON
    paired = body.replace("\\ud800", "\\ud83d\\ude00")
    check_utf8(paired.encode(), json.loads(paired))  # a pair is one character: fine
