"""Doors keep deciding while a large access list arrives and is applied.

Real daemon, real mosquitto, the door simulator on a pty (the rig of
``test_access_e2e``). A 100,000-card snapshot (20 parts) goes out at once,
as a persistent session's catch-up delivers it, and the resident swipes
over and over until the gateway's state acknowledges the new version: every
swipe must be decided and pulse the lock, none may be lost, and each is
decided with the old list or the new one, never anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.access.build import card
from tests.broker import Mosquitto
from tests.integration.test_access_e2e import RESIDENT, Rig, rig

pytestmark = pytest.mark.integration

CARDS = 100_000
SWIPE_TIMEOUT_S = 20.0


def estate() -> list[dict[str, Any]]:
    return [card(RESIDENT, holder="r-0")] + [
        card(f"{0x10000000 + i:08X}", holder=f"r-{i}") for i in range(1, CARDS)
    ]


async def swipe_and_pulse(r: Rig) -> None:
    """One swipe: the card presented, the lock pulsed, the reader re-armed and beeping."""
    node = r.sim.node
    pulses, beeps = len(node.pulses), len(node.beeps)
    node.present_card(RESIDENT)
    async with asyncio.timeout(SWIPE_TIMEOUT_S):
        await r.sim.wait_until(lambda: len(node.pulses) > pulses)
        await r.sim.wait_until(lambda: len(node.beeps) > beeps)


@pytest.mark.timeout(300)
async def test_swipes_during_a_large_snapshot_are_decided_and_pulsed(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with rig(tmp_path, broker) as r:
        await r.publish(*r.snapshot([card(RESIDENT, holder="r-0")], 1))
        await r.state_where(lambda s: s["version"] == 1)
        await swipe_and_pulse(r)
        # Built in a thread: the simulator answers from this event loop.
        bodies = await asyncio.to_thread(
            lambda: [json.dumps(m).encode() for m in r.snapshot(estate(), 2)]
        )
        assert len(bodies) == 20
        applied = asyncio.Event()
        during = 0

        async def swipe_until_applied() -> None:
            nonlocal during
            while not applied.is_set():
                await swipe_and_pulse(r)
                if not applied.is_set():
                    during += 1  # decided and pulsed before the new list was acknowledged

        swiping = asyncio.create_task(swipe_until_applied(), name="swipes")
        try:
            await r.publish(*bodies)
            state = await r.state_where(lambda s: s["version"] == 2)
            applied.set()
            async with asyncio.timeout(SWIPE_TIMEOUT_S * 2):
                await swiping  # the swipe in progress finishes, and raises if it got no pulse
        finally:
            swiping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await swiping
        assert state["cards"] == CARDS and state["last_error"] is None
        assert during >= 1, "no swipe overlapped the snapshot's staging and apply"
        await swipe_and_pulse(r)  # after the acknowledgement: the new list decides
        swiped = len(r.sim.node.pulses)
        await r.sub.wait_for(lambda: len(r.decisions()) >= swiped)
        decisions = r.decisions()
        assert len(decisions) == swiped, "one decision per swipe, each pulsed"
        assert all(d["event"] == "granted" and d["reason"] == "listed" for d in decisions)
        versions = [d["list_version"] for d in decisions]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions) and set(versions) == {1, 2}
