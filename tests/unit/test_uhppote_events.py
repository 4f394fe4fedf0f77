"""UHPPOTE: the library's decoding of the golden frames, and what this gateway adds on top."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from uhppoted import decode

from drivers.uhppote import ControllerEvent
from drivers.uhppote_events import (
    EventClass,
    card_to_hex,
    classify,
    controller_time_to_wall,
    hex_to_card,
    is_empty_timestamp,
    wall_to_controller_time,
)
from drivers.uhppote_link import EventListener

GOLDEN: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "uhppote-golden.json").read_text()
)


def golden(name: str) -> dict[str, Any]:
    return next(g for g in GOLDEN if g["name"] == name)


def frame(name: str, part: str = "reply") -> bytes:
    return bytes.fromhex(golden(name)[part])


def test_get_event_golden_reads_as_a_granted_swipe() -> None:
    event = ControllerEvent.from_get_event(decode.get_event_response(frame("get-event 1")))
    assert event == ControllerEvent(1, 1, True, 1, 10058400, dt.datetime(2026, 11, 30, 8, 15), 1)
    meaning = classify(event.reason, event.granted)
    assert (meaning.event, meaning.reason) == ("granted", "listed")
    assert card_to_hex(event.card) == "997AA0"


def test_get_status_golden_newest_event_is_a_denial_for_no_privilege() -> None:
    status = decode.get_status_response(frame("get-status"))
    assert status.event_index == 2
    meaning = classify(status.event_reason, status.event_access_granted)
    assert (meaning.event, meaning.reason) == ("denied", "door_not_allowed")


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("pushed event (open-door)", "remote_open"),
        ("pushed event (swipe granted)", "granted"),
        ("pushed event (swipe no privilege)", "denied"),
        ("pushed event (swipe unknown card)", "denied"),
        ("pushed event (door opened)", "opened"),
        ("pushed event (door closed)", "closed"),
        ("pushed event (button)", "exit_button"),
    ],
)
def test_pushed_golden_events_classify_by_reason(name: str, event: str) -> None:
    pushed = ControllerEvent.from_push(decode.event(frame(name)))
    assert classify(pushed.reason, pushed.granted).event == event


def test_unknown_card_is_not_listed() -> None:
    pushed = ControllerEvent.from_push(decode.event(frame("pushed event (swipe unknown card)")))
    assert classify(pushed.reason, pushed.granted).reason == "not_listed"


def test_som_0x19_event_from_v6_62_firmware_is_accepted() -> None:
    """Surprise 10: the simulator cannot send it; the library accepts it for 0x20 only."""
    raw = bytearray(frame("pushed event (swipe granted)"))
    raw[0] = 0x19
    got: list[Any] = []
    listener = EventListener("127.0.0.1:0", got.append)
    listener._frame(bytes(raw))
    assert len(got) == 1
    assert got[0].event_index == 4
    raw[1] = 0xB0  # 0x19 is valid only with function 0x20
    listener._frame(bytes(raw))
    listener._frame(b"\x17\x20" + bytes(30))  # short frame
    assert len(got) == 1
    assert listener.rejected == 2


def test_unassigned_bytes_are_ignored() -> None:
    """Surprise 11: real captures carry non-zero bytes at 44 and 56..61."""
    raw = bytearray(frame("pushed event (door opened)"))
    raw[44] = 0x5A
    raw[56:62] = b"\x01\x02\x03\x04\x08\x92"
    event = decode.event(bytes(raw))
    assert (event.event_index, event.event_reason) == (8, 23)


@pytest.mark.parametrize(
    "raw",
    ["00000000000000", "20000000000000", "00010101000000"],
)
def test_three_empty_timestamps(raw: str) -> None:
    """Surprise 8: the library reads Go's zero time as 0001-01-01, not as empty."""
    packet = bytearray(64)
    packet[20:27] = bytes.fromhex(raw)
    assert is_empty_timestamp(decode.unpack_optional_datetime(packet, 20))


def test_a_real_timestamp_is_not_empty() -> None:
    assert not is_empty_timestamp(dt.datetime(2026, 12, 1, 17, 18, 9))


def test_ambiguous_local_time_takes_the_earlier_offset() -> None:
    london = ZoneInfo("Europe/London")
    # 01:30 happens twice on 2026-10-25: first at BST (+1), then at GMT.
    wall = controller_time_to_wall(dt.datetime(2026, 10, 25, 1, 30), london)
    assert wall == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC).timestamp()


def test_controller_local_time_round_trip_in_the_site_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    instant = dt.datetime(2026, 12, 1, 9, 18, 7, tzinfo=dt.UTC).timestamp()
    local = wall_to_controller_time(instant, shanghai)
    assert local == dt.datetime(2026, 12, 1, 17, 18, 7)
    assert controller_time_to_wall(local, shanghai) == instant


@pytest.mark.parametrize(
    ("card", "number"),
    [
        ("997AA0", 10058400),
        ("04A1B2C3", 0x04A1B2C3),
        ("01", 1),
        ("FFFFFFFF", None),  # reserved by the protocol
        ("FFFFFF", None),
        ("04A1B2C3D4", None),  # 5 bytes: does not fit, never truncated
        ("00997AA0", None),  # not a contract id (leading 00 byte)
        ("997aa0", None),
    ],
)
def test_card_ids_to_controller_numbers(card: str, number: int | None) -> None:
    assert hex_to_card(card) == number
    if number is not None:
        assert card_to_hex(number) == card


@pytest.mark.parametrize(
    ("reason", "granted", "event", "why", "code"),
    [
        (1, True, "granted", "listed", None),
        (6, False, "denied", "door_not_allowed", None),
        (11, False, "denied", "door_locked", None),
        (15, False, "denied", "outside_profile", None),
        (18, False, "denied", "not_listed", None),
        (7, False, "denied", "controller_rule", 7),
        (8, False, "denied", "controller_rule", 8),
        (20, True, "exit_button", None, None),
        (23, True, "opened", None, None),
        (24, True, "closed", None, None),
        (37, False, "held_open", None, None),
        (38, False, "forced", None, None),
        (44, True, "remote_open", None, None),
    ],
)
def test_reasons_map_onto_the_contract(
    reason: int, granted: bool, event: str, why: str | None, code: int | None
) -> None:
    meaning = classify(reason, granted)
    assert meaning.cls is EventClass.DOOR
    assert (meaning.event, meaning.reason, meaning.controller_reason) == (event, why, code)


@pytest.mark.parametrize("reason", [28, 29])
def test_power_on_and_reset_are_device_status(reason: int) -> None:
    assert classify(reason, False).cls is EventClass.STATUS
