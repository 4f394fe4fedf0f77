"""The uhppote driver against its simulator over real loopback UDP."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from drivers.actions import DoorOpen, SetDoorMode
from drivers.base import DeviceState, DeviceTimeout, Priority
from drivers.sim.uhppote import SimCard, UhppoteSimulator
from tests.uhppote_rig import SERIAL, MemoryState, make_rig, running

pytestmark = pytest.mark.integration

CARD = 10058400


def add_card(
    sim: UhppoteSimulator, number: int = CARD, doors: tuple[int, ...] = (1, 1, 0, 0)
) -> None:
    sim.state.cards[number] = SimCard(
        number,
        dt.date(2020, 1, 1),
        dt.date(2099, 12, 31),
        (*doors, 0, 0, 0, 0)[:4],  # type: ignore[arg-type]
    )
    sim.state.slots.append(number)


async def test_each_kind_of_event_arrives_once_as_the_right_door_event() -> None:
    async with running() as rig:
        add_card(rig.sim)
        rig.sim.swipe(CARD, 1)  # granted
        rig.sim.swipe(0x04A1B2C3, 2)  # unknown card: denied, not_listed
        rig.sim.open_door(1)
        rig.sim.close_door(1)
        rig.sim.press_button(2)
        await rig.driver.doors()["gate-west"].execute(DoorOpen(hold_seconds=5))
        await rig.sink.until(lambda: len(rig.sink.doors()) >= 6)
        got = [(d["event"], d["door"], d["card"], d["event_index"]) for d in rig.sink.doors()]
        assert got == [
            ("granted", "gate-east", "997AA0", 1),
            ("denied", "gate-west", "04A1B2C3", 2),
            ("opened", "gate-east", None, 3),
            ("closed", "gate-east", None, 4),
            ("exit_button", "gate-west", None, 5),
            ("remote_open", "gate-west", None, 6),
        ]
        granted, denied = rig.sink.doors()[:2]
        assert granted["reason"] == "listed" and granted["list_version"] is None
        assert denied["reason"] == "not_listed"
        assert all(d["controller"] == "gate-ctl-1" for d in rig.sink.doors())
        # The durable bookmark follows, then the controller's.
        await rig.sim.wait_until(lambda: rig.sim.state.bookmark == 6)
        assert rig.state.values[("gate-ctl-1", "event_index")] == f"{SERIAL}:6"


async def test_controller_rule_reason_is_passed_on() -> None:
    async with running() as rig:
        add_card(rig.sim)
        rig.sim.state.record(0x01, 7, door=1, card=CARD)  # wrong PIN: no contract reason
        rig.sim.swipe(CARD, 1)
        await rig.sink.until(lambda: len(rig.sink.doors()) >= 2)
        denied = rig.sink.doors("denied")[0]
        assert (denied["reason"], denied["controller_reason"]) == ("controller_rule", 7)


async def test_dropped_pushes_are_caught_up_in_order_none_twice() -> None:
    async with running() as rig:
        rig.sim.set_drop_pushes(True)
        for n in range(1, 11):
            rig.sim.swipe(n, 1)
        rig.sim.set_drop_pushes(False)
        rig.sim.swipe(11, 1)  # this push skips nine indexes: catch-up
        await rig.sink.until(lambda: len(rig.sink.doors()) >= 11)
        assert [d["event_index"] for d in rig.sink.doors()] == list(range(1, 12))
        assert rig.driver.health.counters["push_gaps"] >= 1


async def test_lost_pushes_with_no_later_push_arrive_on_the_timer() -> None:
    r = await make_rig(catch_up_interval_s=0.3)
    await r.start()
    try:
        r.sim.set_drop_pushes(True)
        r.sim.swipe(1, 1)
        r.sim.swipe(2, 2)
        await r.sink.until(lambda: len(r.sink.doors()) >= 2)
        assert [d["event_index"] for d in r.sink.doors()] == [1, 2]
    finally:
        await r.stop()
        await r.sim.stop()


async def test_restart_resumes_from_the_durable_bookmark_none_twice() -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    state = MemoryState()
    first = await make_rig(sim=sim, state=state)
    await first.start()
    for n in range(1, 4):
        sim.swipe(n, 1)
    await first.sink.until(lambda: len(first.sink.doors()) >= 3)
    await sim.wait_until(lambda: sim.state.bookmark == 3)  # moved only once durable
    assert state.values[("gate-ctl-1", "event_index")] == f"{SERIAL}:3"
    await first.stop()
    sim.add_events(4)  # while the gateway is away, nothing pushed
    second = await make_rig(sim=sim, state=state)
    await second.start()
    try:
        await second.sink.until(lambda: len(second.sink.doors()) >= 4)
        assert [d["event_index"] for d in second.sink.doors()] == [4, 5, 6, 7]
    finally:
        await second.stop()
        await sim.stop()


async def test_overwritten_events_become_one_explained_gap() -> None:
    sim = UhppoteSimulator(SERIAL, event_capacity=20, drop_chunk=10)
    await sim.start()
    state = MemoryState()
    state.values[("gate-ctl-1", "event_index")] = f"{SERIAL}:2"  # read up to 2, long ago
    sim.add_events(50)  # 1..50 recorded; the ring keeps 31..50 at most
    r = await make_rig(sim=sim, state=state)
    await r.start()
    try:
        await r.sink.until(lambda: bool(r.sink.doors()) and r.sink.doors()[-1]["event_index"] == 50)
        gaps = [s for s in r.sink.statuses() if "gap" in s]
        assert len(gaps) == 1
        oldest = sim.state.events[0].index
        assert gaps[0]["gap"] == {"from_index": 3, "to_index": oldest - 1, "count": oldest - 3}
        assert [d["event_index"] for d in r.sink.doors()] == list(range(oldest, 51))
        gap_reading = next(x for x in r.sink.readings if "gap" in x.data)
        assert gap_reading.priority is Priority.ALARM
        # A binary search, not one request per lost event.
        assert sim.state.requests[0xB0] < (50 - oldest + 1) + 10
    finally:
        await r.stop()
        await sim.stop()


async def test_first_adoption_counts_old_events_and_sends_recent_ones() -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    sim.state.offset = -dt.timedelta(days=3)
    sim.add_events(5)  # three days old
    sim.state.offset = dt.timedelta(0)
    sim.add_events(2)
    r = await make_rig(sim=sim)
    await r.start()
    try:
        await r.sink.until(lambda: any("adopted" in s["detail"] for s in r.sink.statuses()))
        assert [d["event_index"] for d in r.sink.doors()] == [6, 7]
        adopted = next(s for s in r.sink.statuses() if "adopted" in s["detail"])
        assert (adopted["counted"], adopted["sent"]) == (5, 2)
    finally:
        await r.stop()
        await sim.stop()


async def test_event_time_is_controller_local_time_in_the_site_zone() -> None:
    from zoneinfo import ZoneInfo

    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    r = await make_rig(sim=sim, zone=ZoneInfo("Asia/Shanghai"))
    await r.start()  # trusted: sets the controller to Shanghai wall time
    try:
        before = dt.datetime.now(dt.UTC).timestamp()
        sim.swipe(1, 1)
        await r.sink.until(lambda: bool(r.sink.doors()))
        reading = next(x for x in r.sink.readings if x.data.get("event") == "denied")
        assert abs(reading.wall_ts - before) < 3
        assert (
            abs(
                (
                    sim.state.now()
                    - dt.datetime.now(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
                ).total_seconds()
            )
            < 3
        )
    finally:
        await r.stop()
        await sim.stop()


async def test_set_time_only_while_trusted_and_drift_alarm() -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    sim.state.offset = dt.timedelta(minutes=5)
    r = await make_rig(sim=sim, time_check_interval_s=0.2, drift_alarm_s=60)
    r.trusted[0] = False
    await r.start()
    try:
        await sim.wait_until(lambda: sim.state.requests[0x32] >= 2)
        assert sim.state.requests[0x30] == 0  # untrusted: never set
        assert abs(sim.state.offset.total_seconds() - 300) < 1
        r.trusted[0] = True
        await sim.wait_until(lambda: sim.state.requests[0x30] >= 1)
        assert abs(sim.state.offset.total_seconds()) < 2
        drift = [s for s in r.sink.statuses() if "drift_s" in s]
        assert drift and 290 <= drift[0]["drift_s"] <= 310
    finally:
        await r.stop()
        await sim.stop()


async def test_set_mode_and_bad_parameters() -> None:
    async with running() as rig:
        door = rig.driver.doors()["gate-east"]
        await door.execute(SetDoorMode("locked"))
        assert rig.sim.state.modes[1] == 2
        add_card(rig.sim)
        rig.sim.swipe(CARD, 1)
        await rig.sink.until(lambda: bool(rig.sink.doors("denied")))
        assert rig.sink.doors("denied")[0]["reason"] == "door_locked"
        # The mode is durable: a restarted driver re-applies it.
        await rig.stop()
        rig.sim.state.modes[1] = 3
        again = await make_rig(sim=rig.sim, state=rig.state)
        await again.start()
        try:
            assert rig.sim.state.modes[1] == 2
            door = again.driver.doors()["gate-east"]
            await door.execute(SetDoorMode("normal"))
            assert rig.sim.state.modes[1] == 3
        finally:
            await again.stop()
        # Bad parameters never reach a driver: the command layer checks them once.


async def test_remote_open_is_confirmed_by_its_event_even_with_pushes_dropped() -> None:
    async with running() as rig:
        rig.sim.set_drop_pushes(True)
        await rig.driver.doors()["gate-east"].execute(DoorOpen(hold_seconds=8))
        assert rig.sink.doors("remote_open")[0]["door"] == "gate-east"
        assert rig.sim.state.delays[1] == 5  # restored after the opening


async def test_door_open_unlocks_for_hold_seconds_and_puts_the_delay_back() -> None:
    """0x40 opens for the door's 0x80 delay: the driver sets it to the hold, then restores it."""
    async with running() as rig:
        east = rig.driver.doors()["gate-east"]
        await east.execute(DoorOpen(hold_seconds=12))
        assert [(u.door, u.seconds) for u in rig.sim.state.unlocks] == [(1, 12)]
        assert rig.sim.state.relays & 1  # energised: 12 s have not passed
        assert rig.sim.state.delays[1] == 5  # door_delay_s again, for card swipes
        await east.execute(DoorOpen(hold_seconds=5))  # the configured delay: no 0x80 needed
        assert [u.seconds for u in rig.sim.state.unlocks] == [12, 5]
        assert rig.sim.state.requests[0x80] == 2 + 2  # configure (two doors) + set and restore


async def test_concurrent_door_opens_each_get_their_own_hold() -> None:
    async with running() as rig:
        doors = rig.driver.doors()
        await asyncio.gather(
            doors["gate-east"].execute(DoorOpen(hold_seconds=3)),
            doors["gate-east"].execute(DoorOpen(hold_seconds=20)),
            doors["gate-west"].execute(DoorOpen(hold_seconds=9)),
        )
        got = sorted((u.door, u.seconds) for u in rig.sim.state.unlocks)
        assert got == [(1, 3), (1, 20), (2, 9)]
        assert (rig.sim.state.delays[1], rig.sim.state.delays[2]) == (5, 5)


async def test_delay_is_restored_when_the_open_door_request_is_lost() -> None:
    async with running() as rig:
        rig.sim.lose_requests(0x40, count=2)  # the first try and the one retry
        with pytest.raises(DeviceTimeout):
            await rig.driver.doors()["gate-east"].execute(DoorOpen(hold_seconds=25))
        assert not rig.sim.state.unlocks  # it never opened
        assert rig.sim.state.delays[1] == 5  # and card swipes do not get 25 s from now on


async def test_delay_is_restored_when_setting_the_hold_goes_unanswered() -> None:
    async with running() as rig:
        rig.sim.lose_requests(0x80, count=2)  # the hold's set-door-control, twice
        with pytest.raises(DeviceTimeout):
            await rig.driver.doors()["gate-east"].execute(DoorOpen(hold_seconds=25))
        assert not rig.sim.state.unlocks
        assert rig.sim.state.requests[0x80] == 2 + 1  # configure (two doors), the restore


async def test_a_delay_not_restored_is_set_again_by_the_next_cycle() -> None:
    async with running() as rig:
        rig.sim.lose_requests(0x80, count=2, after=1)  # the hold is set, the restore is lost
        await rig.driver.doors()["gate-east"].execute(DoorOpen(hold_seconds=17))
        assert [(u.door, u.seconds) for u in rig.sim.state.unlocks] == [(1, 17)]
        async with asyncio.timeout(10):
            await rig.sim.wait_until(lambda: rig.sim.state.delays[1] == 5)


async def test_unanswering_controller_goes_offline_and_comes_back() -> None:
    async with running(catch_up_interval_s=0.3) as rig:
        rig.sim.unplug()
        await rig.sink.until(lambda: rig.driver.health.state is DeviceState.OFFLINE)
        with pytest.raises(Exception, match="no reply"):
            await rig.driver.doors()["gate-east"].execute(DoorOpen())
        rig.sim.swipe(5, 1)  # recorded while unreachable
        rig.sim.replug()
        await rig.sink.until(lambda: rig.driver.health.state is DeviceState.ONLINE, timeout=10)
        await rig.sink.until(lambda: bool(rig.sink.doors()))
        assert rig.sink.doors()[0]["card"] == "05"


async def test_wrong_serial_never_answers() -> None:
    sim = UhppoteSimulator(SERIAL + 1)
    await sim.start()
    r = await make_rig(sim=sim)
    try:
        import asyncio

        task = asyncio.get_running_loop().create_task(r.driver.run())
        await r.sink.until(lambda: r.driver.health.state is DeviceState.OFFLINE)
        assert "no reply" in r.sink.statuses()[-1]["detail"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await sim.stop()


async def test_reset_becomes_device_status_and_reconfigures() -> None:
    async with running() as rig:
        rig.sim.reset()
        await rig.sink.until(lambda: any("reset" in s["detail"] for s in rig.sink.statuses()))
        await rig.sim.wait_until(lambda: rig.sim.state.special_events)


async def test_an_address_left_out_is_found_by_broadcast() -> None:
    sim = UhppoteSimulator(SERIAL)
    await sim.start()
    # On loopback the "broadcast" reaches the one simulator; it answers with its IP.
    try:
        async with running(sim=sim, address=None, broadcast=sim.address) as rig:
            assert rig.driver.link.address == sim.address
            rig.sim.swipe(7, 1)
            await rig.sink.until(lambda: bool(rig.sink.doors()))
    finally:
        await sim.stop()
