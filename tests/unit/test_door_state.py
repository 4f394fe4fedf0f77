"""DoorLogic, the door's pure state machine, on a fake clock (plain floats)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.access_file import FileAccessList
from drivers.access_rules import Decision, DecisionReason, DoorAccess, WallTime
from drivers.actions import OtherAction, Ping
from drivers.base import ActionNotSupportedError, Priority, SystemClock
from drivers.door_node import (
    Beep,
    DoorEvent,
    DoorEventKind,
    DoorLogic,
    DoorMode,
    DoorNodeConfig,
    DoorNodeDriver,
    HoldLock,
    PulseLock,
    Step,
    build_driver,
)
from drivers.transports.bus_pool import BusPool
from drivers.transports.config import ModbusTcpTransportConfig
from tests.fakes import RecordingSink

GRANT = Decision(True, DecisionReason.LISTED, 7)
UNKNOWN = Decision(False, DecisionReason.NOT_LISTED, 7)
LOCKED = Decision(False, DecisionReason.DOOR_LOCKED, 7)
CARD = "04A1B2C3"

E = DoorEventKind


def kinds(step: Step) -> list[DoorEventKind]:
    return [event.kind for event in step.events]


def door(mode: DoorMode = DoorMode.NORMAL) -> DoorLogic:
    logic = DoorLogic(pulse_ms=3000, forced_window_s=10.0, held_open_s=30.0, mode=mode)
    # First read: closed, button up (no event for the first state seen).
    assert logic.inputs(False, False, 0.0) == Step()
    return logic


def test_granted_card_pulses_then_beeps() -> None:
    logic = door()
    step = logic.card(CARD, GRANT, 1.0)
    assert step.events == (DoorEvent(E.GRANTED, CARD, GRANT),)
    assert step.actions == (PulseLock(30), Beep(accept=True))


def test_denied_card_beeps_reject_and_no_pulse() -> None:
    logic = door()
    step = logic.card(CARD, UNKNOWN, 1.0)
    assert step.events == (DoorEvent(E.DENIED, CARD, UNKNOWN),)
    assert step.actions == (Beep(accept=False),)


def test_pulse_rounds_up_to_tenths() -> None:
    logic = DoorLogic(pulse_ms=750)
    assert logic.card(CARD, GRANT, 0.0).actions[0] == PulseLock(8)


def test_opening_after_grant_is_legitimate() -> None:
    logic = door()
    logic.card(CARD, GRANT, 1.0)
    assert kinds(logic.inputs(True, False, 2.0)) == [E.OPENED]
    assert kinds(logic.inputs(False, False, 5.0)) == [E.CLOSED]


def test_opening_without_grant_is_forced_alarm() -> None:
    logic = door()
    step = logic.inputs(True, False, 5.0)
    assert kinds(step) == [E.OPENED, E.FORCED]
    assert step.events[1].priority is Priority.ALARM
    assert step.events[0].priority is Priority.ROUTINE


def test_forced_after_the_window() -> None:
    logic = door()
    logic.card(CARD, GRANT, 1.0)
    # Within the window (lock pulse 3 s, window 10 s): fine.
    assert kinds(logic.inputs(True, False, 11.0)) == [E.OPENED]
    logic.inputs(False, False, 12.0)
    # 10 s after the grant, and the lock long closed again: forced.
    assert kinds(logic.inputs(True, False, 11.01 + 1.0)) == [E.OPENED, E.FORCED]


def test_denied_card_does_not_make_an_opening_legitimate() -> None:
    logic = door()
    logic.card(CARD, UNKNOWN, 1.0)
    assert kinds(logic.inputs(True, False, 2.0)) == [E.OPENED, E.FORCED]


def test_exit_button_pulses_and_makes_opening_legitimate() -> None:
    logic = door()
    step = logic.inputs(False, True, 1.0)
    assert kinds(step) == [E.EXIT_BUTTON]
    assert step.actions == (PulseLock(30),)
    # Held down: no second event or pulse.
    assert logic.inputs(False, True, 1.2) == Step()
    assert kinds(logic.inputs(True, False, 1.4)) == [E.OPENED]


def test_exit_and_open_in_one_poll_is_not_forced() -> None:
    logic = door()
    step = logic.inputs(True, True, 1.0)
    assert kinds(step) == [E.EXIT_BUTTON, E.OPENED]


def test_remote_open_pulses_hold_seconds() -> None:
    logic = door()
    step = logic.remote_open(7, 1.0)
    assert kinds(step) == [E.REMOTE_OPEN]
    assert step.actions == (PulseLock(70),)
    assert kinds(logic.inputs(True, False, 2.0)) == [E.OPENED]


def test_long_remote_open_covers_its_hold_time() -> None:
    logic = door()
    logic.remote_open(30, 0.0)
    # 20 s later: outside the 10 s window, but the lock is still released.
    assert kinds(logic.inputs(True, False, 20.0)) == [E.OPENED]


def test_held_open_after_legitimate_opening() -> None:
    logic = door()
    logic.card(CARD, GRANT, 0.0)
    logic.inputs(True, False, 1.0)
    # held_open counts from the later of the opening (1 s) and the lock closing (3 s).
    assert logic.tick(32.9) == Step()
    assert logic.inputs(True, False, 32.9) == Step()
    step = logic.inputs(True, False, 33.0)
    assert kinds(step) == [E.HELD_OPEN]
    assert step.events[0].priority is Priority.ALARM
    # Once per opening.
    assert logic.tick(100.0) == Step()
    assert kinds(logic.inputs(False, False, 101.0)) == [E.CLOSED]
    # A new legitimate opening arms it again.
    logic.inputs(False, True, 200.0)
    logic.inputs(True, False, 201.0)
    assert kinds(logic.tick(234.0)) == [E.HELD_OPEN]


def test_closed_in_time_no_held_open() -> None:
    logic = door()
    logic.card(CARD, GRANT, 0.0)
    logic.inputs(True, False, 1.0)
    logic.inputs(False, False, 20.0)
    assert logic.tick(100.0) == Step()


def test_forced_door_is_not_also_held_open() -> None:
    logic = door()
    logic.inputs(True, False, 1.0)
    assert logic.tick(1000.0) == Step()


def test_first_state_seen_open_is_silent() -> None:
    logic = DoorLogic()
    assert logic.inputs(True, False, 0.0) == Step()
    assert logic.tick(1000.0) == Step()
    assert kinds(logic.inputs(False, False, 1001.0)) == [E.CLOSED]


def test_locked_mode_denies_cards_but_exit_opens() -> None:
    logic = door(mode=DoorMode.LOCKED)
    step = logic.card(CARD, GRANT, 1.0)
    assert step.events == (DoorEvent(E.DENIED, CARD, LOCKED),)
    assert step.actions == (Beep(accept=False),)
    assert kinds(logic.inputs(True, False, 2.0)) == [E.OPENED, E.FORCED]
    logic.inputs(False, False, 3.0)
    step = logic.inputs(False, True, 20.0)
    assert step.actions == (PulseLock(30),)
    assert kinds(logic.inputs(True, False, 21.0)) == [E.OPENED]


def test_mode_actions() -> None:
    logic = door()
    assert logic.mode_actions(DoorMode.LOCKED) == ()
    assert logic.mode_actions(DoorMode.OPEN) == (HoldLock(on=True),)
    logic.set_mode(DoorMode.OPEN, 1.0)
    assert logic.hold_action() == HoldLock(on=True)
    assert logic.mode_actions(DoorMode.OPEN) == (HoldLock(on=True),)  # re-asserting is harmless
    assert logic.mode_actions(DoorMode.NORMAL) == (HoldLock(on=False),)
    assert logic.mode_actions(DoorMode.LOCKED) == (HoldLock(on=False),)
    logic.set_mode(DoorMode.LOCKED, 2.0)
    assert logic.hold_action() == HoldLock(on=False)


def test_open_mode_no_pulses_no_alarms() -> None:
    logic = door()
    logic.set_mode(DoorMode.OPEN, 0.0)
    # A card is still decided and beeped, but a pulse would end the relay hold.
    assert logic.card(CARD, GRANT, 1.0).actions == (Beep(accept=True),)
    assert logic.card(CARD, UNKNOWN, 1.0).actions == (Beep(accept=False),)
    step = logic.inputs(False, True, 2.0)
    assert kinds(step) == [E.EXIT_BUTTON]
    assert step.actions == ()
    assert logic.remote_open(5, 3.0).actions == ()
    assert kinds(logic.inputs(True, False, 500.0)) == [E.OPENED]
    assert logic.tick(5000.0) == Step()


def test_leaving_open_mode_starts_the_clocks() -> None:
    logic = door()
    logic.set_mode(DoorMode.OPEN, 0.0)
    logic.inputs(True, False, 100.0)
    logic.set_mode(DoorMode.NORMAL, 1000.0)
    assert logic.tick(1029.9) == Step()
    assert kinds(logic.tick(1030.0)) == [E.HELD_OPEN]
    logic.inputs(False, False, 1031.0)
    # The lock closed at the mode change: an opening soon after is still legitimate...
    assert kinds(logic.inputs(True, False, 1005.0 + 4.0)) == [E.OPENED]
    logic.inputs(False, False, 1040.0)
    # ...but not long after.
    assert kinds(logic.inputs(True, False, 1100.0)) == [E.OPENED, E.FORCED]


@pytest.mark.parametrize(
    ("idle_at", "seen_at", "fresh"),
    [(0.0, 0.2, True), (0.0, 2.0, True), (0.0, 2.01, False), (None, 0.2, False)],
)
def test_card_freshness(idle_at: float | None, seen_at: float, fresh: bool) -> None:
    logic = DoorLogic(stale_card_s=2.0)
    if idle_at is not None:
        logic.reader_idle(idle_at)
    assert logic.card_waiting(seen_at) is fresh


def test_card_is_consumed_by_its_decision_until_rearmed() -> None:
    logic = DoorLogic(stale_card_s=2.0)
    logic.reader_idle(0.0)
    assert logic.card_waiting(0.2)
    logic.card("04A1B2C3", GRANT, 0.25)
    # The re-arm failed: the same flag is seen again and must not be replayed.
    assert not logic.card_waiting(0.4)
    logic.reader_idle(0.5)  # a re-arm went through
    assert logic.card_waiting(0.6)


def test_card_not_yet_decided_stays_fresh_until_stale() -> None:
    # The flag was seen but the read of the id failed (a glitch): the card
    # is still bounded by the last idle poll, and decided on a later poll.
    logic = DoorLogic(stale_card_s=2.0)
    logic.reader_idle(0.0)
    assert logic.card_waiting(0.2)
    assert logic.card_waiting(1.2)
    assert not logic.card_waiting(2.1)  # older than stale_card_s: discarded...
    assert not logic.card_waiting(2.2)  # ...and stays unknown until re-armed


# -- configuration and the driver's action surface (no I/O) -------------------


def config(**options: object) -> DoorNodeConfig:
    raw: dict[str, object] = {
        "id": "door-east-1",
        "kind": "door_node",
        "transport": {"type": "modbus_rtu", "port": "/dev/ttyUSB0"},
    }
    raw.update(options)
    return DoorNodeConfig.model_validate(raw)


def test_config_defaults() -> None:
    cfg = config()
    assert (cfg.relay_slave, cfg.reader_slave, cfg.lock_relay) == (1, 2, 1)
    assert (cfg.pulse_ms, cfg.poll_interval_ms) == (3000, 200)
    assert (cfg.forced_window_s, cfg.held_open_s) == (10.0, 30.0)
    assert cfg.mode is DoorMode.NORMAL
    assert cfg.offline_after_failures == 3
    assert cfg.door_name == "door-east-1"
    assert config(door="east-gate").door_name == "east-gate"


def test_config_tcp_transport() -> None:
    cfg = config(transport={"type": "modbus_tcp", "host": "10.0.0.5"})
    assert isinstance(cfg.transport, ModbusTcpTransportConfig)


@pytest.mark.parametrize(
    "options",
    [
        {"relay_slave": 2},  # same as the reader
        {"lock_relay": 9},
        {"mode": "evacuate"},
        {"pulse_ms": 50},
        {"door": "East Gate"},
        {"transport": {"type": "serial"}},
        {"colour": "red"},
    ],
)
def test_config_rejects(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        config(**options)


def make_driver(tmp_path: Path) -> DoorNodeDriver:
    driver = build_driver(
        config(),
        sink=RecordingSink(),
        clock=SystemClock(),
        buses=BusPool(),
        access=DoorAccess(FileAccessList(tmp_path / "access.cards"), WallTime(SystemClock()), UTC),
    )
    assert isinstance(driver, DoorNodeDriver)
    return driver


async def test_driver_actions_and_unsupported_ones(tmp_path: Path) -> None:
    # Parameters are checked once, by the command layer (test_command_model.py);
    # the driver takes typed actions and refuses only what it does not do.
    driver = make_driver(tmp_path)
    assert driver.actions() == frozenset({"door.open", "door.set_mode"})
    with pytest.raises(ActionNotSupportedError):
        await driver.execute(Ping())
    with pytest.raises(ActionNotSupportedError):
        await driver.execute(OtherAction("door.unlock_forever"))
