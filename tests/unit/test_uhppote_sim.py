"""The UHPPOTE simulator answers the golden requests with the golden replies."""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.sim.uhppote import ControllerState, SimCard
from tests.unit.test_uhppote_events import frame, golden

SERIAL = 405419896
NOW = dt.datetime(2026, 12, 1, 17, 18, 9)


def controller() -> ControllerState:
    return ControllerState(SERIAL, clock=lambda: NOW)


def test_put_then_get_card_by_id_and_count() -> None:
    c = controller()
    assert c.handle(frame("put-card", "request")) == frame("put-card")
    assert c.handle(frame("get-card-by-id", "request")) == frame("get-card-by-id")
    assert c.handle(frame("get-card-by-id (absent)", "request")) == frame("get-card-by-id (absent)")


def test_deleted_slot_reads_as_a_tombstone() -> None:
    c = controller()
    for n in (10058400, 10058401, 10058402):
        c.cards[n] = SimCard(n, dt.date(2026, 1, 1), dt.date(2027, 12, 31), (1, 0, 0, 0))
        c.slots.append(n)
    assert c.handle(frame("get-cards (after put)", "request")) == frame("get-cards (after put)")
    assert c.handle(frame("delete-card", "request")) == frame("delete-card")
    got = c.handle(frame("get-card-by-index (deleted slot)", "request"))
    assert got == frame("get-card-by-index (deleted slot)")


@pytest.mark.parametrize(
    "name", ["set-listener", "get-door-control", "set-door-control", "open-door", "get-device"]
)
def test_simple_replies(name: str) -> None:
    assert controller().handle(frame(name, "request")) == frame(name)


def test_get_event_and_bookmark() -> None:
    c = ControllerState(SERIAL, clock=lambda: dt.datetime(2026, 11, 30, 8, 15))
    c.cards[10058400] = SimCard(10058400, dt.date(2026, 1, 1), dt.date(2027, 12, 31), (1, 0, 0, 0))
    event = c.swipe(10058400, 1)
    assert event.granted
    reply = bytearray(c.handle(frame("get-event 1", "request")) or b"")
    expected = bytearray(frame("get-event 1"))
    reply[12] = expected[12] = (
        0  # the reference simulator types a granted swipe 1 here, 2 in pushes
    )
    assert reply == expected
    assert c.handle(frame("set-event-index (bad magic)", "request")) is None
    c.swipe(10058400, 1)
    assert c.handle(frame("set-event-index", "request")) == frame("set-event-index")


def test_wrong_serial_is_silence() -> None:
    assert controller().handle(frame("get-status (wrong serial)", "request")) is None
    assert golden("get-status (wrong serial)")["reply"] is None


def test_ring_overwrites_oldest_events_in_chunks() -> None:
    c = ControllerState(SERIAL, event_capacity=10, drop_chunk=4, clock=lambda: NOW)
    for _ in range(12):
        c.swipe(1, 1)
    assert c.event_at(1) is False
    assert c.event_at(4) is False
    first = c.event_at(5)
    assert first is not False and first is not None and first.index == 5
    assert c.event_at(13) is None


async def test_script_verbs_drive_the_simulator() -> None:
    from drivers.sim.script import ScriptError, apply
    from drivers.sim.uhppote import UhppoteSimulator

    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    try:
        sims = {"uhppote-1": sim}
        apply(sims, "uhppote-1 drop-pushes")  # type: ignore[arg-type]
        assert sim.drop_pushes
        apply(sims, "uhppote-1 swipe 10058400 door 2")  # type: ignore[arg-type]
        assert (sim.state.events[-1].card, sim.state.events[-1].door) == (10058400, 2)
        apply(sims, "uhppote-1 reset")  # type: ignore[arg-type]
        assert sim.state.events[-1].reason == 29
        apply(sims, "uhppote-1 deliver-pushes")  # type: ignore[arg-type]
        assert not sim.drop_pushes
        try:
            apply(sims, "uhppote-1 dance")  # type: ignore[arg-type]
        except ScriptError as exc:
            assert "swipe CARD door N" in str(exc)
        else:
            raise AssertionError("an unknown verb must be refused")
    finally:
        await sim.stop()


class _Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_open_door_energises_the_relay_for_the_delay_in_force_then() -> None:
    """0x40 has no duration: the relay runs for the 0x80 delay read at the opening."""
    clock = _Monotonic()
    c = ControllerState(SERIAL, clock=lambda: NOW, monotonic=clock)
    set_delay_12 = bytearray(frame("set-door-control", "request"))
    set_delay_12[8:11] = bytes((1, 3, 12))
    assert c.handle(bytes(set_delay_12)) is not None
    assert c.handle(frame("open-door", "request")) == frame("open-door")
    assert c.relays & 1
    set_delay_12[10] = 2
    c.handle(bytes(set_delay_12))  # a later delay does not shorten this opening
    clock.now += 11.9
    assert c.relays & 1
    clock.now += 0.1
    assert not c.relays & 1
    assert [(u.door, u.seconds) for u in c.unlocks] == [(1, 12)]
    c.handle(frame("open-door", "request"))  # now 2 s
    assert [(u.door, u.seconds) for u in c.unlocks][-1] == (1, 2)
    c.contact(1, is_open=True)  # the door moved: the lock lets go at once
    assert not c.relays & 1
