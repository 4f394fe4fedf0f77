"""The wearable policy (PROTOCOLS.md "Elder-care wearables") on a fake clock,
and the receiver's configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from drivers.base import Priority, ReadingType
from drivers.ble_receiver import (
    BleReceiverConfig,
    WearableEvent,
    WearableTracker,
    mask,
    normalise_mac,
)
from drivers.codecs.ble_gprp import BtHomeButton, BtHomePayload, IngicsPayload

BTHOME = "A4C138000001"
IBS = "C1A2B3C4D5E6"
WEARERS = {BTHOME: "band-mei", IBS: "band-li"}


def tracker(**kw: float) -> WearableTracker:
    return WearableTracker(WEARERS, now=0.0, **kw)


def press(packet: int | None, battery: int = 90) -> BtHomePayload:
    return BtHomePayload(packet_id=packet, battery_pct=battery, button=BtHomeButton.PRESS)


def ibs(*, button: bool = False, fall: bool = False, v: float = 3.0) -> IngicsPayload:
    return IngicsPayload(v, button=button, moving=False, fall=fall, subtype=6)


def of_type(events: list[WearableEvent], type_: ReadingType) -> list[WearableEvent]:
    return [e for e in events if e.type is type_]


def test_unknown_band_gives_nothing() -> None:
    t = tracker()
    assert t.wearer("FFFFFFFFFFFF") is None
    assert t.observe("FFFFFFFFFFFF", press(1), now=1.0) == []


def test_bthome_one_sos_per_packet_id() -> None:
    t = tracker()
    events = t.observe(BTHOME, press(42), now=1.0, rssi=-70)
    (sos,) = of_type(events, ReadingType.WEARABLE_SOS)
    assert sos.priority is Priority.ALARM
    assert sos.data == {
        "wearer": "band-mei",
        "battery": 90,
        "rssi": -70,
        "source": "bthome",
        "event": "press",
    }
    for i in range(20):  # the band repeats the same advertisement
        assert (
            of_type(t.observe(BTHOME, press(42), now=1.0 + i * 0.1), ReadingType.WEARABLE_SOS) == []
        )
    # a new press has a new packet id: a new SOS, even right away
    assert len(of_type(t.observe(BTHOME, press(43), now=3.5), ReadingType.WEARABLE_SOS)) == 1


def test_bthome_same_id_after_holdoff_is_a_new_press() -> None:
    # After a band reboot (or wrap-around) the id repeats; once the old
    # advertisement has not been heard for the hold-off it is a new press.
    t = tracker(sos_holdoff_s=30)
    t.observe(BTHOME, press(5), now=0.0)
    assert of_type(t.observe(BTHOME, press(5), now=29.0), ReadingType.WEARABLE_SOS) == []
    assert of_type(t.observe(BTHOME, press(5), now=58.0), ReadingType.WEARABLE_SOS) == []
    assert len(of_type(t.observe(BTHOME, press(5), now=88.1), ReadingType.WEARABLE_SOS)) == 1


def test_bthome_without_packet_id_uses_holdoff() -> None:
    t = tracker(sos_holdoff_s=30)
    assert len(of_type(t.observe(BTHOME, press(None), now=0.0), ReadingType.WEARABLE_SOS)) == 1
    assert of_type(t.observe(BTHOME, press(None), now=10.0), ReadingType.WEARABLE_SOS) == []
    assert len(of_type(t.observe(BTHOME, press(None), now=30.0), ReadingType.WEARABLE_SOS)) == 1


def test_bthome_event_names() -> None:
    t = tracker()
    p = BtHomePayload(packet_id=1, battery_pct=50, button=BtHomeButton.LONG_PRESS)
    (sos,) = of_type(t.observe(BTHOME, p, now=0.0), ReadingType.WEARABLE_SOS)
    assert sos.data["event"] == "long_press"
    p = BtHomePayload(packet_id=2, battery_pct=50, button=0x77)
    (sos,) = of_type(t.observe(BTHOME, p, now=0.0), ReadingType.WEARABLE_SOS)
    assert sos.data["event"] == "0x77"
    # no button event: no SOS
    p = BtHomePayload(packet_id=3, battery_pct=50, button=BtHomeButton.NONE)
    assert of_type(t.observe(BTHOME, p, now=0.0), ReadingType.WEARABLE_SOS) == []


def test_ibs01_sos_and_fall_hold_off() -> None:
    t = tracker(sos_holdoff_s=30, fall_holdoff_s=20)
    events = t.observe(IBS, ibs(button=True, fall=True), now=0.0, rssi=-67)
    (sos,) = of_type(events, ReadingType.WEARABLE_SOS)
    (fall,) = of_type(events, ReadingType.WEARABLE_FALL)
    assert sos.data == {
        "wearer": "band-li",
        "battery": None,
        "battery_v": 3.0,
        "rssi": -67,
        "source": "iBS01G",
    }
    assert fall.priority is Priority.ALARM
    assert fall.data == {"wearer": "band-li", "rssi": -67, "source": "iBS01G"}
    later = t.observe(IBS, ibs(button=True, fall=True), now=20.0)
    assert of_type(later, ReadingType.WEARABLE_SOS) == []
    assert len(of_type(later, ReadingType.WEARABLE_FALL)) == 1
    assert len(of_type(t.observe(IBS, ibs(button=True), now=30.0), ReadingType.WEARABLE_SOS)) == 1


def test_vitals_at_most_once_per_interval() -> None:
    t = tracker(vitals_interval_s=600)
    (v,) = of_type(t.observe(IBS, ibs(v=2.95), now=0.0, rssi=-60), ReadingType.WEARABLE_VITALS)
    assert v.priority is Priority.ROUTINE
    assert v.data == {"wearer": "band-li", "battery": None, "battery_v": 2.95, "rssi": -60}
    for now in (1.0, 300.0, 599.0):
        assert of_type(t.observe(IBS, ibs(), now=now), ReadingType.WEARABLE_VITALS) == []
    assert len(of_type(t.observe(IBS, ibs(), now=600.0), ReadingType.WEARABLE_VITALS)) == 1
    # per wearer
    (b,) = of_type(t.observe(BTHOME, BtHomePayload(1, 77), now=1.0), ReadingType.WEARABLE_VITALS)
    assert b.data == {"wearer": "band-mei", "battery": 77, "rssi": None}


def test_vitals_carry_voltage_when_bthome_sends_it() -> None:
    t = tracker()
    p = BtHomePayload(packet_id=1, battery_pct=None, voltage_v=2.9)
    (v,) = of_type(t.observe(BTHOME, p, now=0.0), ReadingType.WEARABLE_VITALS)
    assert v.data == {"wearer": "band-mei", "battery": None, "battery_v": 2.9, "rssi": None}
    # nothing to report: no vitals
    t2 = tracker()
    assert t2.observe(BTHOME, BtHomePayload(packet_id=1), now=0.0) == []


def test_presence_absent_then_present() -> None:
    t = tracker(absent_after_s=900)
    t.observe(BTHOME, None, now=0.0)
    assert t.tick(899.0) == []
    events = t.tick(900.0)
    # both bands: IBS was never heard, counted from start
    assert sorted((e.data["wearer"], e.data["state"]) for e in events) == [
        ("band-li", "absent"),
        ("band-mei", "absent"),
    ]
    assert all(e.type is ReadingType.WEARABLE_PRESENCE for e in events)
    assert t.tick(2000.0) == []  # reported once
    back = t.observe(BTHOME, None, now=2001.0)
    assert [(e.type, e.data) for e in back] == [
        (ReadingType.WEARABLE_PRESENCE, {"wearer": "band-mei", "state": "present"})
    ]
    assert t.observe(BTHOME, None, now=2002.0) == []  # present only once


def test_resume_gives_grace_after_receiver_outage() -> None:
    t = tracker(absent_after_s=900)
    t.observe(BTHOME, None, now=0.0)
    t.resume(1000.0)  # the receiver was down from ~0 to 1000
    assert t.tick(1000.0) == []
    assert len(t.tick(1900.0)) == 2


# --- configuration ------------------------------------------------------------------


def test_mac_normalisation_and_masking() -> None:
    assert normalise_mac("a4:c1:38:00:00:01") == BTHOME
    assert normalise_mac("a4-c1-38-00-00-01") == BTHOME
    with pytest.raises(ValueError, match="12 hex"):
        normalise_mac("a4c13800000")
    assert mask(BTHOME) == "A4C1******01"
    assert mask("ab") == "**"


def test_config() -> None:
    cfg = BleReceiverConfig.model_validate(
        {
            "id": "ble-1",
            "kind": "ble_receiver",
            "transport": {"port": "/dev/ttyACM0"},
            "wearers": {"a4:c1:38:00:00:01": "band-mei", "c1a2b3c4d5e6": "band-li"},
        }
    )
    assert cfg.transport.baudrate == 115200
    assert cfg.wearers == WEARERS
    assert (cfg.sos_holdoff_s, cfg.vitals_interval_s, cfg.absent_after_s) == (30, 600, 900)


@pytest.mark.parametrize(
    ("wearers", "message"),
    [
        ({"a4c138000001": "x", "A4C138000001": "y"}, "listed twice"),
        ({"a4c138000001": "x", "c1a2b3c4d5e6": "x"}, "unique"),
        ({"a4c13800000": "x"}, "12 hex"),
        ({"a4c138000001": "Band Mei"}, "wearer ids"),
    ],
)
def test_config_errors(wearers: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BleReceiverConfig.model_validate(
            {"id": "ble-1", "kind": "ble_receiver", "simulate": True, "wearers": wearers}
        )


def test_config_requires_port_unless_simulated() -> None:
    with pytest.raises(ValidationError, match="port is required"):
        BleReceiverConfig.model_validate({"id": "ble-1", "kind": "ble_receiver"})
