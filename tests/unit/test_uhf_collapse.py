"""The UHF reader's pure parts: pass collapsing on a fake clock, timestamps,
and the configuration (PROTOCOLS.md "UHF RFID reader", CONTRACT.md ``ebike.pass``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.uhf_reader import PassCollapser, TagPass, UhfReaderConfig, rfc3339_ms

WALL0 = 1_795_939_200.0  # 2026-11-29T08:00:00Z
EPC = "E2000017221100881520ABCD"


def observe(c: PassCollapser, epc: str, t: float, **kw: int | None) -> list[TagPass]:
    return c.observe(epc, mono=t, wall=WALL0 + t, **kw)


def test_rfc3339_ms() -> None:
    assert rfc3339_ms(WALL0) == "2026-11-29T08:00:00.000Z"
    assert rfc3339_ms(WALL0 + 0.1234) == "2026-11-29T08:00:00.123Z"
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"


def test_repeats_within_window_collapse_into_one_pass() -> None:
    c = PassCollapser(window_s=5.0)
    for t in (0.0, 0.2, 0.4, 1.0, 5.9):  # each gap < 5 s
        assert observe(c, EPC, t, antenna=1) == []
    assert c.expire(10.8) == []  # 4.9 s after the last read: still open
    assert c.next_deadline() == pytest.approx(10.9)
    (p,) = c.expire(10.9)
    assert p.count == 5
    assert p.epc == EPC
    assert (p.first_mono, p.last_mono) == (0.0, 5.9)
    assert p.data() == {
        "epc": EPC,
        "rssi": None,
        "antenna": 1,
        "first_seen": "2026-11-29T08:00:00.000Z",
        "last_seen": "2026-11-29T08:00:05.900Z",
        "count": 5,
    }
    assert c.open_count == 0
    assert c.next_deadline() is None


def test_gap_of_a_window_starts_a_new_pass() -> None:
    c = PassCollapser(window_s=5.0)
    observe(c, EPC, 0.0)
    # expire() was not called in time: the late read closes the old pass itself.
    (old,) = observe(c, EPC, 5.0)
    assert old.count == 1
    (new,) = c.expire(10.0)
    assert (new.count, new.first_mono) == (1, 5.0)


def test_tags_are_independent_and_best_rssi_kept() -> None:
    c = PassCollapser(window_s=1.0)
    observe(c, "AA", 0.0, rssi=-70)
    observe(c, "BB", 0.1, rssi=None)
    observe(c, "AA", 0.5, rssi=-50)
    observe(c, "AA", 0.6, rssi=-60)
    passes = {p.epc: p for p in c.expire(1.2)}
    assert set(passes) == {"BB"}
    (aa,) = c.expire(1.6)
    assert (aa.epc, aa.rssi, aa.count) == ("AA", -50, 3)
    assert passes["BB"].rssi is None


def test_parked_tag_is_reported_after_max_pass() -> None:
    c = PassCollapser(window_s=5.0, max_pass_s=60.0)
    t = 0.0
    closed: list[TagPass] = []
    while t < 130:
        closed += observe(c, EPC, t)
        closed += c.expire(t)
        t += 1.0
    assert [p.count for p in closed] == [60, 60]
    assert closed[1].first_mono == 60.0


def test_open_tags_are_bounded() -> None:
    c = PassCollapser(window_s=5.0, max_open=3)
    closed: list[TagPass] = []
    for i in range(5):
        closed += observe(c, f"{i:02X}", float(i) / 10)
    assert [p.epc for p in closed] == ["00", "01"]
    assert c.open_count == 3


def test_flush_reports_everything() -> None:
    c = PassCollapser(window_s=5.0)
    observe(c, "AA", 0.0)
    observe(c, "BB", 1.0)
    assert sorted(p.epc for p in c.flush()) == ["AA", "BB"]
    assert c.flush() == []


@given(
    st.lists(
        st.tuples(st.sampled_from(["AA", "BB", "CC"]), st.floats(0, 2.0)), min_size=1, max_size=60
    )
)
def test_every_read_is_counted_once(reads: list[tuple[str, float]]) -> None:
    c = PassCollapser(window_s=1.0, max_pass_s=30.0)
    t = 0.0
    passes: list[TagPass] = []
    for epc, gap in reads:
        t += gap
        passes += c.expire(t)
        passes += observe(c, epc, t)
    passes += c.flush()
    assert sum(p.count for p in passes) == len(reads)
    for p in passes:
        assert p.first_mono <= p.last_mono
        assert p.last_mono - p.first_mono < 30.0


# --- configuration ------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = UhfReaderConfig.model_validate(
        {"id": "uhf-1", "kind": "uhf_reader", "transport": {"type": "serial", "port": "/dev/x"}}
    )
    assert cfg.transport.baudrate == 57600  # this kind's default, not the transport's 9600
    assert (cfg.address, cfg.mode, cfg.collapse_window_s) == (0, "answer", 5.0)
    simulated = UhfReaderConfig.model_validate(
        {"id": "uhf-1", "kind": "uhf_reader", "simulate": True}
    )
    assert simulated.transport.baudrate == 57600
    assert simulated.transport.port is None
    minimal = UhfReaderConfig.model_validate(
        {"id": "uhf-1", "kind": "uhf_reader", "transport": {"port": "/dev/x", "baudrate": 115200}}
    )
    assert minimal.transport.baudrate == 115200


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"transport": {"port": "/dev/x", "baudrate": 2400}}, "Chafon reader supports"),
        ({"transport": {"port": "/dev/x", "parity": "E"}}, "8N1"),
        ({"transport": {"type": "serial"}}, "port is required"),
        ({"transport": {"port": "/dev/x"}, "address": 256}, "less than or equal"),
        ({"transport": {"port": "/dev/x"}, "mode": "push"}, "answer"),
        ({"transport": {"port": "/dev/x"}, "colapse_window_s": 3}, "Extra inputs"),
        ({"transport": {"port": "/dev/x"}, "offline_after_s": 1}, "offline_after_s"),
        (
            {"transport": {"port": "/dev/x"}, "mode": "scan", "probe_interval_s": 10},
            "probe_interval_s",
        ),
    ],
)
def test_config_errors(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UhfReaderConfig.model_validate({"id": "uhf-1", "kind": "uhf_reader", **extra})
