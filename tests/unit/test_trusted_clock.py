"""Trusted time (CONTRACT 1.1, "Time when the clock cannot be trusted").

Card windows, command windows and replay-store pruning are judged by
``TrustedClock.now()``; its latest value is kept in the outbox database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.access_file import FileAccessList
from drivers.access_rules import DecisionReason, DoorAccess, WallTime
from gateway.commands.model import CommandRejected, RejectReason
from gateway.commands.store import CommandStore
from gateway.commands.verify import CommandVerifier
from gateway.outbox.store import Outbox
from gateway.runtime.clock import TrustedClock
from tests.fakes import FakeClock, FakeClockSync
from tests.unit.test_command_verify import DEVICE_ACTIONS, GATEWAY, command, make_config


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_synced_now_is_the_wall_clock() -> None:
    clock = FakeClock(wall=ts("2026-03-01T00:00:00"))
    trusted = TrustedClock(clock, FakeClockSync(synced=True))
    assert trusted.now() == clock.wall() and trusted.is_synced()


def test_nothing_ever_trusted_uses_the_wall_clock_as_it_is() -> None:
    clock = FakeClock(wall=ts("2024-06-01T00:00:00"))
    trusted = TrustedClock(clock, FakeClockSync(synced=False))
    assert trusted.now() == clock.wall() and not trusted.is_synced()


def test_unsynced_now_is_the_latest_trusted_time_plus_monotonic_elapsed() -> None:
    clock = FakeClock(wall=ts("2026-03-01T00:00:00"))
    sync = FakeClockSync(synced=True)
    trusted = TrustedClock(clock, sync)
    trusted.now()
    sync.synced = False
    clock.advance(100)
    clock.step_wall(-365 * 86400)  # the wall clock jumps a year back
    assert trusted.now() == pytest.approx(ts("2026-03-01T00:01:40"))
    clock.step_wall(2 * 365 * 86400)  # or a year ahead: not believed either
    assert trusted.now() == pytest.approx(ts("2026-03-01T00:01:40"))


def test_a_restart_adds_nothing_for_the_time_down() -> None:
    last = ts("2026-03-01T00:00:00")
    clock = FakeClock(wall=ts("2024-06-01T00:00:00"), mono=5.0)  # fresh boot, stale clock
    trusted = TrustedClock(clock, FakeClockSync(synced=False), last_trusted=last)
    assert trusted.now() == last
    clock.advance(30)
    assert trusted.now() == last + 30


def test_observed_times_only_move_now_forward() -> None:
    clock = FakeClock(wall=ts("2024-06-01T00:00:00"))
    trusted = TrustedClock(clock, FakeClockSync(synced=False), last_trusted=ts("2026-03-01"))
    trusted.observe_trusted(ts("2025-01-01"))  # an old signed issued_at: nothing new
    assert trusted.now() == ts("2026-03-01")
    trusted.observe_trusted(ts("2026-04-01"))
    assert trusted.now() == ts("2026-04-01")


def test_persisted_at_most_once_an_interval_and_at_shutdown() -> None:
    clock = FakeClock(wall=ts("2026-03-01T00:00:00"))
    written: list[float] = []
    trusted = TrustedClock(
        clock, FakeClockSync(synced=True), persist=written.append, persist_interval_s=60
    )
    for _ in range(100):
        trusted.now()
        clock.advance(1)
    assert written == [ts("2026-03-01T00:00:00"), ts("2026-03-01T00:01:00")]
    trusted.persist_now()
    assert written[-1] == clock.wall()  # projected to this moment


async def trusted_after_restart(
    data: Path, clock: FakeClock, sync: FakeClockSync
) -> tuple[Outbox, TrustedClock]:
    """Open the outbox and a trusted clock restored from it, as the supervisor does."""
    outbox = Outbox(
        data, site="changqing", gateway_id=GATEWAY, clock=clock, clock_sync=sync, boot_id="b"
    )
    await outbox.open()
    trusted = TrustedClock(clock, sync, persist=outbox.record_trusted_time)
    if outbox.trusted_wall is not None:
        trusted.observe_trusted(outbox.trusted_wall)
    return outbox, trusted


async def run_synced_until(data: Path, wall: float) -> None:
    """A run whose clock was synced, ending (clean stop) at ``wall``."""
    clock = FakeClock(wall=wall)
    outbox, trusted = await trusted_after_restart(data, clock, FakeClockSync(synced=True))
    trusted.now()
    trusted.persist_now()
    await outbox.close()


async def test_expired_card_is_denied_at_a_stale_boot_time(tmp_path: Path) -> None:
    cards = tmp_path / "cards.txt"
    cards.write_text("04A1B2C3 until=2025-01-31\n", encoding="utf-8")
    await run_synced_until(tmp_path / "data", ts("2025-03-01T12:00:00"))
    # Power cut; the Pi boots believing it is 2024-06-01 and NTP is out of reach.
    stale = FakeClock(wall=ts("2024-06-01T00:00:00"), mono=12.0)
    outbox, trusted = await trusted_after_restart(
        tmp_path / "data", stale, FakeClockSync(synced=False)
    )
    listed = FileAccessList(cards, tz=UTC)
    listed.refresh()
    judged = DoorAccess(listed, trusted, UTC).decide(
        "04A1B2C3", "door-east-1", door_refuses_cards=False
    )
    assert (judged.granted, judged.reason) == (False, DecisionReason.EXPIRED)
    # The raw wall clock (the old behaviour) would have let the card in.
    raw = DoorAccess(listed, WallTime(stale), UTC)
    assert raw.decide("04A1B2C3", "door-east-1", door_refuses_cards=False).granted
    await outbox.close()


def verifier(
    store: CommandStore, clock: FakeClock, trusted: TrustedClock | None
) -> CommandVerifier:
    return CommandVerifier(
        make_config(),
        gateway_id=GATEWAY,
        device_actions=DEVICE_ACTIONS,
        seen=store,
        clock=clock,
        trusted=trusted,
    )


async def test_a_used_command_id_cannot_be_replayed_after_the_clock_is_set_back(
    tmp_path: Path,
) -> None:
    issued = ts("2026-11-29T08:00:00")
    payload = json.dumps(command(issued_at=issued, ttl_s=30)).encode()
    data = tmp_path / "data"

    # Synced: the command runs, and two days later its id is pruned (rightly).
    clock = FakeClock(wall=issued + 1)
    sync = FakeClockSync(synced=True)
    outbox, trusted = await trusted_after_restart(data, clock, sync)
    store = CommandStore.open(data, clock=clock, now=trusted.now)
    verified = verifier(store, clock, trusted).verify(payload)
    assert store.accept(
        verified, received_at=clock.wall(), response_topic=None, correlation_data=None
    )
    clock.advance(2 * 86400)
    assert store.prune() == 1
    trusted.persist_now()
    store.close()
    await outbox.close()

    # Reboot with the clock set back into the command's window, unsynced.
    back = FakeClock(wall=issued + 10, mono=3.0)
    outbox, trusted = await trusted_after_restart(data, back, FakeClockSync(synced=False))
    store = CommandStore.open(data, clock=back, now=trusted.now)
    with pytest.raises(CommandRejected) as rejected:
        verifier(store, back, trusted).verify(payload)
    assert rejected.value.reason is RejectReason.EXPIRED
    # Judged by the raw wall clock (the old behaviour), the replay would run.
    assert verifier(store, back, None).verify(payload).id == verified.id
    store.close()
    await outbox.close()


def test_a_verified_issued_at_is_trusted_time(tmp_path: Path) -> None:
    issued = ts("2026-11-29T08:00:00")
    stale = FakeClock(wall=ts("2024-06-01T00:00:00"))
    trusted = TrustedClock(stale, FakeClockSync(synced=False))
    store = CommandStore.open(tmp_path, clock=stale, now=trusted.now)
    checker = verifier(store, stale, trusted)
    # Without it, a stale clock would call a fresh command "not yet valid".
    assert checker.verify(json.dumps(command(issued_at=issued)).encode())
    assert trusted.now() == issued - make_config().skew_s
    store.close()
