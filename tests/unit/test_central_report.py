"""The platform's gap arithmetic and batch reading (central.report, central.wire)."""

from __future__ import annotations

import json

import pytest

from central.report import gaps_between, islands, merge, subtract
from central.wire import Kind, Route, WireError, parse_batch, route
from tests.fleet.wire import batch, reading


def test_gaps_start_at_seq_one_and_stop_at_the_last_received() -> None:
    assert gaps_between([(3, 4), (8, 10), (6, 6)]) == [(1, 2), (5, 5), (7, 7)]
    assert gaps_between([(1, 10)]) == []


def test_dropped_ranges_explain_part_of_a_gap() -> None:
    missing, explained = subtract([(5, 20)], [(7, 9), (12, 25)])
    assert missing == [(5, 6), (10, 11)]
    assert explained == [(7, 9), (12, 20)]
    assert subtract([(1, 3)], []) == ([(1, 3)], [])


def test_seqs_become_runs_and_runs_merge_when_they_touch_or_overlap() -> None:
    assert islands([5, 3, 4, 4, 9, 1]) == [(1, 1), (3, 5), (9, 9)]
    assert islands([]) == []
    # Each group appends its own ranges; redeliveries overlap, batches touch.
    assert merge([(11, 20), (1, 10), (5, 8), (22, 30), (30, 31)]) == [(1, 20), (22, 31)]


def test_routing_keys_name_site_gateway_and_kind() -> None:
    assert route("estates.s1.gateways.g-1.access.state") == Route("s1", "g-1", Kind.ACCESS_STATE)
    assert route("estates.s1.gateways.g-1.commands.results").kind is Kind.RESULT
    with pytest.raises(WireError):
        route("estates.s1.gateways.g-1.commands")


def test_a_reading_whose_id_is_not_its_seq_is_refused() -> None:
    where = Route("s1", "g1", Kind.READINGS)
    ok = parse_batch(batch("s1", "g1", "e1", [reading("g1", "e1", 7)]), where)
    assert (ok.epoch, ok.count) == ("e1", 1)
    bad = reading("g1", "e1", 7) | {"id": "g1:e1:8"}
    with pytest.raises(WireError):
        parse_batch(batch("s1", "g1", "e1", [bad]), where)
    with pytest.raises(WireError):
        parse_batch(batch("s1", "other", "e1", [reading("other", "e1", 1)]), where)
    with pytest.raises(WireError):
        parse_batch(b"{not json", where)


def test_a_batch_is_split_into_its_readings_with_their_bodies_as_sent() -> None:
    where = Route("s1", "g1", Kind.READINGS)
    alarm = reading("g1", "e1", 2, priority="alarm")
    plain = {k: v for k, v in reading("g1", "e1", 3).items() if k != "priority"}
    odd_ts = reading("g1", "e1", 4) | {"ts": "yesterday", "clock": "unsynced"}
    payload = batch("s1", "g1", "e1", [reading("g1", "e1", 1), alarm, plain, odd_ts])
    parsed = parse_batch(payload, where)
    assert parsed.epoch == "e1" and parsed.sent_at is not None
    assert [(r.id, r.seq, r.priority) for r in parsed.readings] == [
        ("g1:e1:1", 1, "routine"),
        ("g1:e1:2", 2, "alarm"),
        ("g1:e1:3", 3, "routine"),  # the contract's default
        ("g1:e1:4", 4, "routine"),
    ]
    # A ts outside the contract's form is not indexed; the body keeps it.
    assert parsed.readings[0].ts == alarm["ts"] and parsed.readings[3].ts is None
    # Each body is the gateway's JSON as it came, not re-encoded.
    for r in parsed.readings:
        assert r.body.encode() in payload
        assert json.loads(r.body)["id"] == r.id


@pytest.mark.parametrize(
    "change",
    [
        {"seq": True},
        {"seq": 0},
        {"seq": 1.0},
        {"type": None},
        {"priority": 1},
    ],
)
def test_a_reading_without_a_valid_seq_type_or_priority_is_refused(
    change: dict[str, object],
) -> None:
    bad = reading("g1", "e1", 1) | change
    with pytest.raises(WireError):
        parse_batch(batch("s1", "g1", "e1", [bad]), Route("s1", "g1", Kind.READINGS))


def test_a_batch_that_is_not_v1_is_refused() -> None:
    doc = json.loads(batch("s1", "g1", "e1", [reading("g1", "e1", 1)]))
    for v in (2, "1", True, None):
        with pytest.raises(WireError):
            parse_batch(json.dumps(doc | {"v": v}).encode(), Route("s1", "g1", Kind.READINGS))
    with pytest.raises(WireError):
        parse_batch(b"[1, 2]", Route("s1", "g1", Kind.READINGS))
