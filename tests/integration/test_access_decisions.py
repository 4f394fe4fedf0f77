"""Every decision reason on the real door simulator (pty), deciding with the SQLite store.

The list is a real ``access.sqlite3`` written by the store's writer; the
trusted time is a controllable stand-in for the gateway's trusted clock, so
a test can stand on a closed date, across a DST change, or with an unsynced
clock past a card's ``until``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.access_rules import DoorAccess
from drivers.actions import SetDoorMode
from drivers.base import Reading
from gateway.access.build import card, snapshot_messages
from gateway.access.message import AccessSnapshotPart, parse_message
from gateway.access.store import DB_FILENAME, AccessStore, AccessWriter
from tests.integration.test_door_node import DOOR, Rig, make_rig

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
KEY = Ed25519PrivateKey.generate()
VERSION = 7
DAY = {
    "weekly": {"mon": [["06:00", "23:00"]], "sun": [["08:00", "09:00"]]},
    "closed_dates": ["2026-12-28"],
}


def local(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


MONDAY_NOON = local("2026-11-30T12:00")


class SteeredTime:
    """Trusted time the test sets: ``now`` and whether the clock is synced."""

    def __init__(self, now: float, synced: bool = True) -> None:
        self.wall = now
        self.synced = synced

    def now(self) -> float:
        return self.wall

    def is_synced(self) -> bool:
        return self.synced


def write_list(data_dir: Path, cards: list[dict[str, Any]]) -> AccessStore:
    store = AccessStore.open(data_dir)
    writer = AccessWriter(data_dir / DB_FILENAME)
    for message in snapshot_messages(
        cards,
        {"day": DAY},
        gateway="north-gate-1",
        version=VERSION,
        key=KEY,
        key_id="k",
        issued_at=MONDAY_NOON,
    ):
        part = parse_message(message)
        assert isinstance(part, AccessSnapshotPart)
        writer.stage_part(part, MONDAY_NOON)
    writer.close()
    return store


CARDS = [
    card("0A01"),
    card("0A02", doors=["door-west-1"]),
    card("0A03", valid_from="2026-12-01T00:00:00.000Z"),
    card("0A04", until="2026-11-30T03:59:59.000Z"),
    card("0A05", profile="day"),
    card("0A06", until="2026-11-30T04:00:05.000Z"),
]


async def decide_at_the_door(
    tmp_path: Path,
    card_id: str,
    time: SteeredTime,
    *,
    tz: ZoneInfo = SHANGHAI,
    locked: bool = False,
) -> tuple[Reading, Rig]:
    store = write_list(tmp_path / "data", CARDS)
    access = DoorAccess(store, time, tz)
    async with make_rig(tmp_path, access=access) as rig:
        await rig.online()
        if locked:
            await rig.driver.execute(SetDoorMode("locked"))
        rig.sim.present_card(card_id)
        event = await rig.sink.wait_for(lambda r: r.data.get("event") in {"granted", "denied"})
        pulses = len(rig.sim.node.pulses)
    store.close()
    assert event.data["door"] == DOOR and event.data["list_version"] == VERSION
    assert pulses == (1 if event.data["event"] == "granted" else 0)
    return event, rig


@pytest.mark.parametrize(
    ("card_id", "now", "synced", "locked", "event", "reason"),
    [
        ("0A01", MONDAY_NOON, True, False, "granted", "listed"),
        ("0A01", MONDAY_NOON, True, True, "denied", "door_locked"),
        ("0BEE", MONDAY_NOON, True, False, "denied", "not_listed"),
        ("0A02", MONDAY_NOON, True, False, "denied", "door_not_allowed"),
        ("0A03", MONDAY_NOON, True, False, "denied", "not_yet_valid"),
        ("0A04", MONDAY_NOON, True, False, "denied", "expired"),
        ("0A05", MONDAY_NOON, False, False, "denied", "clock_unsynced"),
        ("0A05", local("2026-12-28T12:00"), True, False, "denied", "closed_date"),
        ("0A05", local("2026-11-30T23:00"), True, False, "denied", "outside_profile"),
        ("0A05", MONDAY_NOON, True, False, "granted", "listed"),
        # The card's until passed while the clock is unsynced: trusted time still expires it.
        ("0A06", MONDAY_NOON + 10, False, False, "denied", "expired"),
        ("0A06", MONDAY_NOON, False, False, "granted", "listed"),
    ],
    ids=[
        "listed",
        "door_locked",
        "not_listed",
        "door_not_allowed",
        "not_yet_valid",
        "expired",
        "clock_unsynced",
        "closed_date",
        "outside_profile",
        "profile_inside",
        "expired_while_unsynced",
        "unsynced_without_profile",
    ],
)
async def test_decision_reason(
    tmp_path: Path,
    card_id: str,
    now: float,
    synced: bool,
    locked: bool,
    event: str,
    reason: str,
) -> None:
    decision, _ = await decide_at_the_door(
        tmp_path, card_id, SteeredTime(now, synced), locked=locked
    )
    assert (decision.data["event"], decision.data["reason"]) == (event, reason)


@pytest.mark.parametrize(
    ("now", "event"),
    [
        (local("2026-10-25T08:30", BERLIN), "granted"),  # first Sunday in CET
        (local("2026-10-18T08:30", BERLIN), "granted"),  # the Sunday before, CEST
        (local("2026-10-18T08:30", BERLIN) + 3600, "denied"),  # 08:30 CET's UTC a week earlier
    ],
    ids=["after_dst_end", "before_dst_end", "same_utc_time_before"],
)
async def test_profile_across_a_dst_change(tmp_path: Path, now: float, event: str) -> None:
    decision, _ = await decide_at_the_door(tmp_path, "0A05", SteeredTime(now), tz=BERLIN)
    assert decision.data["event"] == event
