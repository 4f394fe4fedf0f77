"""Line noise (issue 9 item 10): a burst on the line costs neither a swipe nor a bike.

The door node and the UHF reader run on their simulators' real ptys with the
shipped timings (``tests.gate_rig``). The simulators put garbage on the line
and break replies (``drivers.sim.noise``); then a resident swipes and a bike
passes at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.base import ReadingType
from drivers.codecs.door_node_map import CARD_ID_REGISTER
from tests.fakes import WAIT_S
from tests.gate_rig import EPC, KNOWN, bike, door_event, gate

pytestmark = pytest.mark.integration


async def test_swipe_and_pass_during_noise_bursts_are_both_read(tmp_path: Path) -> None:
    async with gate(tmp_path) as g:
        await g.ready()
        for burst in range(3):
            pulses = len(g.door_sim.node.pulses)
            granted = len([r for r in g.sink.readings if door_event("granted")(r)])
            epc = f"{EPC[:-1]}{burst}"
            # Noise on both lines, and during it a swipe and a bike (in the
            # field for one second, then gone).
            g.door_sim.server.noise_burst(0.5)
            g.uhf_sim.noise_burst(0.5)
            g.door_sim.present_card(KNOWN)
            g.uhf_sim.inject_pass(epc, reads=6, duration_s=1.0, leaves=True)
            await g.sink.wait_for(bike(epc))
            async with asyncio.timeout(WAIT_S):
                await g.door_sim.wait_until(lambda: len(g.door_sim.node.pulses) > pulses)  # noqa: B023
            await g.sink.wait_for(
                lambda r, n=granted: (
                    len([x for x in g.sink.readings if door_event("granted")(x)]) > n
                )
            )
        assert g.door.health.counters.get("cards_discarded_stale", 0) == 0
        assert g.door_sim.server.noise.corrupted >= 3
        assert g.uhf_sim.noise.corrupted >= 3
        g.never_offline()


async def test_three_corrupted_replies_cost_no_swipe(tmp_path: Path) -> None:
    async with gate(tmp_path) as g:
        await g.ready()
        g.door_sim.server.corrupt_next_replies(3)
        g.door_sim.present_card(KNOWN)
        await g.sink.wait_for(door_event("granted"))
        assert len(g.door_sim.node.pulses) == 1
        assert g.door_sim.server.noise.corrupted == 3
        assert g.door.health.counters.get("cards_discarded_stale", 0) == 0
        g.never_offline()


async def test_two_corrupted_uhf_replies_lose_no_bike(tmp_path: Path) -> None:
    async with gate(tmp_path) as g:
        await g.ready()
        g.uhf_sim.corrupt_next_replies(2)
        g.uhf_sim.inject_pass(EPC, reads=5, duration_s=0.8, leaves=True)
        await g.sink.wait_for(bike(EPC))
        assert g.uhf_sim.noise.corrupted == 2
        g.never_offline()


async def test_card_swiped_while_the_node_is_silent_a_second_is_decided(tmp_path: Path) -> None:
    # A glitch shorter than offline_after_s and stale_card_ms: the node does not
    # go offline, and the card swiped during it is decided when it answers again.
    async with gate(tmp_path) as g:
        await g.ready()
        g.door_sim.stop_answering()
        g.door_sim.present_card(KNOWN)
        server = g.door_sim.server
        async with asyncio.timeout(WAIT_S):
            seen = server.received
            # Silent for at least four requests (more than one failed transaction).
            await server.wait_until(lambda: server.received >= seen + 4)
        g.door_sim.resume_answering()
        await g.sink.wait_for(door_event("granted"))
        assert g.door.health.counters.get("cards_discarded_stale", 0) == 0
        g.never_offline()


async def test_node_silent_longer_than_offline_after_s_goes_offline(tmp_path: Path) -> None:
    async with gate(tmp_path, door={"offline_after_s": 1.0}) as g:
        await g.ready()
        g.door_sim.stop_answering()
        await g.sink.wait_for(
            lambda r: r.type is ReadingType.DEVICE_STATUS and r.data["state"] == "offline"
        )
        g.door_sim.resume_answering()
        await g.sink.wait_for(
            lambda r: (
                r.type is ReadingType.DEVICE_STATUS
                and r.data["state"] == "online"
                and g.sink.states(g.door.device_id)[-2:] == ["offline", "online"]
            )
        )


async def test_card_whose_id_read_is_lost_is_decided_on_the_next_poll(tmp_path: Path) -> None:
    # The poll saw the card, then the line lost the read of its id (both
    # attempts): the card is still the one that came after the last idle poll,
    # so the next poll decides it instead of discarding it as of unknown age.
    async with gate(tmp_path) as g:
        await g.ready()
        server = g.door_sim.server
        server.ignore_next(2, slave=2, address=CARD_ID_REGISTER)
        g.door_sim.present_card(KNOWN)
        await g.sink.wait_for(door_event("granted"))
        lost = [r for r in server.requests if r.address == CARD_ID_REGISTER and not r.answered]
        assert len(lost) == 2
        assert g.door.health.counters.get("cards_discarded_stale", 0) == 0
        g.never_offline()


async def test_uhf_gives_up_a_garbled_reply_at_once_when_out_of_resends(tmp_path: Path) -> None:
    # No resends and a 5 s reply timeout: a garbled reply still costs only the
    # quiet after it, then the next inventory comes at the poll interval.
    uhf = {"retries": 0, "reply_timeout_ms": 5000, "offline_after_s": 10}
    async with gate(tmp_path, uhf=uhf) as g:
        await g.ready()
        g.uhf_sim.corrupt_next_replies(1)
        g.uhf_sim.inject_pass(EPC, reads=5, duration_s=0.8, leaves=True)
        await g.sink.wait_for(bike(EPC))
        assert g.uhf.health.counters["garbled_replies"] == 1
        assert g.uhf.health.counters.get("timeouts", 0) == 0
        g.never_offline()
