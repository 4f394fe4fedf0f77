"""The access store on real SQLite files: snapshots, deltas, staging, digest, restarts."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.access.build import card, delta_message, snapshot_messages
from gateway.access.digest import EMPTY_DIGEST, digest_of_list
from gateway.access.message import (
    AccessDelta,
    AccessErrorReason,
    AccessRefused,
    AccessSnapshotPart,
    parse_message,
)
from gateway.access.store import DB_FILENAME, STALE_PARTS_S, AccessStore, AccessWriter

KEY = Ed25519PrivateKey.generate()
GW = "north-gate-1"
T0 = 1_795_000_000.0
DAY = {"weekly": {"mon": [["06:00", "23:00"]]}, "closed_dates": ["2026-12-31"]}


def independent_digest(cards: list[dict[str, Any]], profiles: Mapping[str, Any]) -> str:
    """CONTRACT.md "Digest", written out from the definition, not the gateway's code."""
    doc = {"cards": sorted(cards, key=lambda c: c["card"]), "profiles": dict(profiles)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parts(cards: list[dict[str, Any]], version: int, **kw: Any) -> list[AccessSnapshotPart]:
    msgs = snapshot_messages(
        cards,
        kw.pop("profiles", {}),
        gateway=GW,
        version=version,
        key=KEY,
        key_id="k",
        issued_at=T0,
        **kw,
    )
    out = []
    for msg in msgs:
        parsed = parse_message(msg)
        assert isinstance(parsed, AccessSnapshotPart)
        out.append(parsed)
    return out


def delta(base: int, version: int, upsert: list[dict[str, Any]], delete: list[str], **kw: Any):
    parsed = parse_message(
        delta_message(
            gateway=GW,
            base=base,
            version=version,
            upsert=upsert,
            delete=delete,
            key=KEY,
            key_id="k",
            issued_at=T0,
            **kw,
        )
    )
    assert isinstance(parsed, AccessDelta)
    return parsed


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[AccessStore, AccessWriter]]:
    store = AccessStore.open(tmp_path)
    writer = AccessWriter(tmp_path / DB_FILENAME)
    yield store, writer
    store.close()
    writer.close()


CARDS = [card(f"04A1B2{i:02X}", holder=f"r-{i}") for i in range(7)]


def test_empty_state(db: tuple[AccessStore, AccessWriter]) -> None:
    store, writer = db
    state = writer.state()
    assert (state.version, state.cards, state.digest) == (0, 0, EMPTY_DIGEST)
    assert independent_digest([], {}) == EMPTY_DIGEST
    assert state.pending is None and state.last_error is None and state.ignored == 0
    assert store.version == 0 and store.lookup("04A1B200") is None


def test_snapshot_of_three_parts_applies_only_when_complete(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    store, writer = db
    p1, p2, p3 = parts(CARDS, 5, part_size=3, profiles={"day": DAY})
    assert writer.stage_part(p3, T0).change is None
    assert writer.stage_part(p1, T0).change is None
    assert store.lookup("04A1B200") is None and store.version == 0
    pending = writer.state().pending
    assert pending is not None and (pending.version, pending.parts, pending.received) == (5, 3, 2)
    change = writer.stage_part(p2, T0).change
    assert change is not None
    assert (change.from_version, change.to_version, change.upserts, change.deletes) == (0, 5, 7, 0)
    assert change.digest == independent_digest(CARDS, {"day": DAY})
    entry = store.lookup("04A1B203")
    assert entry is not None and entry.holder == "r-3" and store.version == 5
    assert store.profiles().keys() == {"day"}
    state = writer.state()
    assert state.pending is None and state.cards == 7 and state.digest == change.digest


def test_part_received_twice_is_ignored(db: tuple[AccessStore, AccessWriter]) -> None:
    _, writer = db
    p1, _p2 = parts(CARDS, 5, part_size=4)
    assert not writer.stage_part(p1, T0).ignored
    assert writer.stage_part(p1, T0).ignored
    pending = writer.state().pending
    assert pending is not None and pending.received == 1


def test_parts_survive_a_restart(tmp_path: Path) -> None:
    p1, p2 = parts(CARDS, 3, part_size=4)
    writer = AccessWriter(tmp_path / DB_FILENAME)
    writer.stage_part(p1, T0)
    writer.close()
    writer = AccessWriter(tmp_path / DB_FILENAME)
    assert writer.stage_part(p2, T0).change is not None
    store = AccessStore.open(tmp_path)
    assert store.lookup("04A1B206") is not None and store.version == 3
    store.close()
    writer.close()


def test_a_higher_version_discards_the_gathering_and_late_parts_are_ignored(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    store, writer = db
    old1, old2 = parts(CARDS, 3, part_size=4)
    (new,) = parts(CARDS[:2], 4)
    writer.stage_part(old1, T0)
    assert writer.stage_part(new, T0).change is not None
    assert writer.stage_part(old2, T0).ignored
    assert store.lookup("04A1B205") is None and store.version == 4
    assert writer.state().pending is None


def test_superseded_parts_are_discarded_by_a_verified_higher_part(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    _, writer = db
    old1, old2 = parts(CARDS, 3, part_size=4)
    new1, _new2 = parts(CARDS, 4, part_size=4)
    writer.stage_part(old1, T0)
    writer.stage_part(new1, T0)
    assert writer.stage_part(old2, T0).ignored  # a part of a superseded version
    pending = writer.state().pending
    assert pending is not None and (pending.version, pending.received) == (4, 1)


def test_parts_disagreeing_on_parts_discard_the_gathering(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    _, writer = db
    a1, _a2 = parts(CARDS, 3, part_size=4)
    _b1, _b2, b3 = parts(CARDS, 3, part_size=3)
    writer.stage_part(a1, T0)
    with pytest.raises(AccessRefused) as info:
        writer.stage_part(b3, T0)
    assert info.value.reason is AccessErrorReason.BAD_SCHEMA
    assert writer.state().pending is None


def test_a_card_in_two_parts_refuses_that_part_only(db: tuple[AccessStore, AccessWriter]) -> None:
    _, writer = db
    p1, _p2 = parts(CARDS, 3, part_size=4)
    clash = parts(CARDS[3:4] + CARDS[4:], 3, part_size=4)[0]
    clash = AccessSnapshotPart(clash.envelope, 2, 2, None, clash.cards)
    writer.stage_part(p1, T0)
    with pytest.raises(AccessRefused, match="another part"):
        writer.stage_part(clash, T0)
    pending = writer.state().pending
    assert pending is not None and pending.received == 1


def test_snapshot_naming_an_undefined_profile_is_refused_whole(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    store, writer = db
    cards = [card("0A", profile="night")]
    (p1,) = parts(cards, 2, profiles={"day": DAY})
    with pytest.raises(AccessRefused) as info:
        writer.stage_part(p1, T0)
    assert info.value.reason is AccessErrorReason.BAD_SCHEMA
    assert writer.state().pending is None and store.version == 0


def test_stale_parts_are_discarded_after_an_hour(db: tuple[AccessStore, AccessWriter]) -> None:
    _, writer = db
    p1, _p2 = parts(CARDS, 3, part_size=4)
    writer.stage_part(p1, T0)
    assert not writer.discard_stale(T0 + STALE_PARTS_S - 1)
    assert writer.discard_stale(T0 + STALE_PARTS_S)
    assert writer.state().pending is None


def test_delta_on_its_base_applies_and_counts(db: tuple[AccessStore, AccessWriter]) -> None:
    store, writer = db
    for p in parts(CARDS, 1, profiles={"day": DAY}):
        writer.stage_part(p, T0)
    same = CARDS[0]
    changed = card("04A1B201", holder="r-new", profile="day")
    added = card("0B0C")
    d = delta(1, 3, [same, changed, added], ["04A1B202", "0DEAD0"])
    change = writer.apply_delta(d)
    assert (change.from_version, change.to_version, change.upserts, change.deletes) == (1, 3, 2, 1)
    model = [c for c in CARDS if c["card"] not in {"04A1B201", "04A1B202"}] + [changed, added]
    assert change.cards == 7
    assert change.digest == independent_digest(model, {"day": DAY})
    entry = store.lookup("04A1B201")
    assert entry is not None and entry.profile == "day" and store.version == 3


def test_delta_on_another_base_is_refused(db: tuple[AccessStore, AccessWriter]) -> None:
    store, writer = db
    with pytest.raises(AccessRefused) as info:
        writer.apply_delta(delta(4, 5, [card("0A")], []))
    assert info.value.reason is AccessErrorReason.BASE_MISMATCH
    assert store.lookup("0A") is None and writer.state().version == 0


def test_delta_profile_rules(db: tuple[AccessStore, AccessWriter]) -> None:
    _, writer = db
    writer.apply_delta(delta(0, 1, [card("0A", profile="day")], [], profiles={"day": DAY}))
    with pytest.raises(AccessRefused, match="still named"):
        writer.apply_delta(delta(1, 2, [], [], delete_profiles=["day"]))
    with pytest.raises(AccessRefused, match="unknown profile"):
        writer.apply_delta(delta(1, 2, [card("0B", profile="night")], []))
    change = writer.apply_delta(delta(1, 2, [], ["0A"], delete_profiles=["day"]))
    assert change.digest == independent_digest([], {})


def test_refusal_and_ignore_are_recorded_and_an_apply_clears_the_error(
    db: tuple[AccessStore, AccessWriter],
) -> None:
    _, writer = db
    writer.record_error(AccessErrorReason.BASE_MISMATCH, 9, T0)
    writer.record_ignored()
    writer.record_ignored()
    state = writer.state()
    assert state.ignored == 2
    assert state.last_error is not None and state.last_error.reason == "base_mismatch"
    writer.apply_delta(delta(0, 1, [card("0A")], []))
    state = writer.state()
    assert state.last_error is None and state.ignored == 2


def test_digest_does_not_depend_on_the_order_of_arrival(tmp_path: Path) -> None:
    cards = [card(f"A{i:03X}", holder="h\u00e9") for i in range(1, 30)]
    a = AccessWriter(tmp_path / "a.sqlite3")
    for p in parts(cards, 1, part_size=10):
        a.stage_part(p, T0)
    b = AccessWriter(tmp_path / "b.sqlite3")
    b.apply_delta(delta(0, 1, list(reversed(cards[10:])), []))
    b.apply_delta(delta(1, 2, list(reversed(cards[:10])), []))
    assert a.state().digest == b.state().digest == independent_digest(cards, {})
    assert digest_of_list(list(reversed(cards)), {}) == a.state().digest


# -- property: the store equals a plain dictionary model --------------------------

CARD_IDS = ["0A", "0B", "0C", "0D", "0E"]
PROFILE_NAMES = ["p", "q"]
entries = st.builds(
    lambda c, h, p: card(c, holder=h, profile=p),
    st.sampled_from(CARD_IDS),
    st.sampled_from([None, "x", "y"]),
    st.sampled_from([None, "p"]),
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("snapshot"),
            st.integers(0, 3),  # version offset from held (0: ignored)
            st.dictionaries(st.sampled_from(CARD_IDS), entries, max_size=5),
            st.integers(1, 3),  # part size
        ),
        st.tuples(
            st.just("delta"),
            st.integers(-1, 1),  # base offset from held (nonzero: base_mismatch)
            st.dictionaries(st.sampled_from(CARD_IDS), entries, max_size=3),
            st.lists(st.sampled_from(CARD_IDS), max_size=3, unique=True),
        ),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_store_matches_a_dictionary_model(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = AccessStore.open(Path(tmp))
        writer = AccessWriter(Path(tmp) / DB_FILENAME)
        version, model = 0, {}
        profiles = {"p": DAY}
        for op in ops:
            if op[0] == "snapshot":
                _, step, chosen, size = op
                new = [dict(e, card=c) for c, e in chosen.items()]
                target = version + step
                if target <= version:
                    continue  # the processor ignores it before the store
                for p in parts(new, target, part_size=size, profiles=profiles):
                    writer.stage_part(p, T0)
                version, model = target, {e["card"]: e for e in new}
            else:
                _, base_offset, chosen, deleted = op
                upsert = [dict(e, card=c) for c, e in chosen.items()]
                deleted = [c for c in deleted if c not in chosen]
                d = delta(
                    max(0, version + base_offset), version + 2, upsert, deleted, profiles=profiles
                )
                if d.base != version:
                    with pytest.raises(AccessRefused):
                        writer.apply_delta(d)
                    continue
                writer.apply_delta(d)
                version += 2
                model.update({e["card"]: e for e in upsert})
                for c in deleted:
                    model.pop(c, None)
            state = writer.state()
            assert state.version == version
            assert state.cards == len(model)
            assert state.digest == independent_digest(list(model.values()), profiles)
            for c in CARD_IDS:
                entry = store.lookup(c)
                assert (entry is None) == (c not in model)
                if entry is not None:
                    assert (entry.holder, entry.profile) == (
                        model[c]["holder"],
                        model[c]["profile"],
                    )
            assert [e.card for e in store.entries()] == sorted(model)
        store.close()
        writer.close()


def test_an_unusable_database_is_moved_aside_and_the_list_starts_empty(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"not a database at all" * 100)
    store = AccessStore.open(tmp_path)
    assert store.lookup("0A") is None and store.version == 0
    assert store.state().digest == EMPTY_DIGEST
    assert [p.name for p in tmp_path.glob(f"{DB_FILENAME}.corrupt-*")]
    store.close()
