"""The platform's gap arithmetic and batch reading (central.report, central.wire)."""

from __future__ import annotations

import pytest

from central.report import gaps_between, subtract
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
