"""Access-list messages as the platform builds them (central.access, CONTRACT.md 1.1)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import access

EMPTY_DIGEST = hashlib.sha256(b'{"cards":[],"profiles":{}}').hexdigest()


def card(card_id: str, **kw: object) -> dict[str, object]:
    return {
        "card": card_id,
        "holder": None,
        "doors": None,
        "from": None,
        "until": None,
        "profile": None,
    } | kw


def test_card_ids_are_normalised_as_readers_report_them() -> None:
    assert access.normalise_card("0004a1b2c3") == "04A1B2C3"
    assert access.normalise_card("00997AA0") == "997AA0"
    for bad in ("", "ABC", "0000", "XYZ1", "01" * 11):
        with pytest.raises(ValueError):
            access.normalise_card(bad)


def test_an_entry_has_exactly_the_six_keys_and_sorted_doors() -> None:
    got = access.entry({"card": "04a1", "doors": ["b-door", "a-door", "a-door"]}, {})
    assert got == card("04A1", doors=["a-door", "b-door"])
    with pytest.raises(ValueError, match="unknown keys"):
        access.entry({"card": "04A1", "name": "Alice"}, {})
    with pytest.raises(ValueError, match="unknown profile"):
        access.entry({"card": "04A1", "profile": "night"}, {})
    with pytest.raises(ValueError, match="until"):
        access.entry({"card": "04A1", "until": "2027-06-30T16:00:00+08:00"}, {})


def test_profiles_are_checked_as_the_contract_defines_them() -> None:
    ok = {"weekly": {"sat": [["08:00", "12:00"], ["14:00", "24:00"]]}, "closed_dates": []}
    assert access.check_profile("day", ok) is ok
    for bad in (
        {"weekly": {"sat": [["14:00", "24:00"], ["08:00", "12:00"]]}},  # not sorted
        {"weekly": {"sat": [["08:00", "12:00"], ["11:00", "13:00"]]}},  # overlapping
        {"weekly": {"sun": [["24:00", "24:00"]]}},
        {"weekly": {"someday": []}},
        {"closed_dates": ["2026-12-31", "2026-12-30"]},
    ):
        with pytest.raises(ValueError):
            access.check_profile("day", bad)


def test_the_digest_is_the_contracts() -> None:
    assert access.digest([], {}) == EMPTY_DIGEST
    cards = [card("04B2"), card("04A1", holder="r-1")]
    text = json.dumps(
        {"cards": sorted(cards, key=lambda c: str(c["card"])), "profiles": {}},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert access.digest(cards, {}) == hashlib.sha256(text.encode()).hexdigest()


def test_a_snapshot_is_split_in_parts_with_profiles_in_the_first_only() -> None:
    cards = [card(f"{n:06X}") for n in range(1, access.SNAPSHOT_PART_CARDS * 2 + 2)]
    parts = access.snapshot("g1", version=7, cards=cards, profiles={}, key_id="k")
    assert [p["part"] for p in parts] == [1, 2, 3] and {p["parts"] for p in parts} == {3}
    assert "profiles" in parts[0] and all("profiles" not in p for p in parts[1:])
    assert sum(len(p["cards"]) for p in parts) == len(cards)
    assert all("sig" not in p for p in parts)  # unsigned: signed as each part is sent
    [empty] = access.snapshot("g1", version=1, cards=[], profiles={}, key_id="k")
    assert empty["cards"] == [] and empty["parts"] == 1


def test_a_delta_too_large_for_one_message_is_refused() -> None:
    upsert = [card(f"{n:06X}") for n in range(1, access.MAX_ENTRIES + 2)]
    with pytest.raises(ValueError):
        access.delta(
            "g1",
            base=1,
            version=2,
            upsert=upsert,
            delete=[],
            profiles={},
            delete_profiles=[],
            key_id="k",
        )


def test_messages_are_signed_over_the_canonical_form_without_sig() -> None:
    key = Ed25519PrivateKey.generate()
    message = access.delta(
        "g1",
        base=1,
        version=2,
        upsert=[card("04A1")],
        delete=["04B2"],
        profiles={},
        delete_profiles=[],
        key_id="platform",
    )
    signed = json.loads(access.signed_payload(message, key))
    sig = base64.b64decode(signed.pop("sig"))
    canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key.public_key().verify(sig, canonical.encode())
