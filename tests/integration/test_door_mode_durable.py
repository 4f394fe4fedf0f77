"""A remote lockdown survives a crash (issue 9 item 8): real daemon, broker and door simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broker import SharedBroker
from tests.integration.test_commands_e2e import rig

pytestmark = pytest.mark.integration

KNOWN = "04A1B2C3"
"""Listed for every door in the shipped access/cards.txt."""


async def test_locked_mode_survives_sigkill_and_is_in_status(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    async with rig(tmp_path, shared_broker) as r:
        command = r.command(action="door.set_mode", params={"mode": "locked"})
        await r.publish(command)
        assert (await r.result_for(command["id"]))["status"] == "done"
        # The new mode is in the status at once (a change, not the next interval).
        await r.sub.wait_for(
            lambda: any(
                m.json().get("devices", {}).get("door-east-1", {}).get("mode") == "locked"
                for m in r.sub.on("status")
            ),
            timeout=10,
        )
        r.daemon.kill()
        statuses = len(r.sub.on("status"))
        r.daemon.start()
        # Back online, with the mode it had in the status entry of the door.
        await r.sub.wait_for(
            lambda: any(
                m.json().get("state") == "online"
                and m.json()["devices"].get("door-east-1", {}).get("mode") == "locked"
                for m in r.sub.on("status")[statuses:]
            )
        )
        await r.sub.wait_for(
            lambda: (
                sum(
                    1
                    for x in r.sub.readings()
                    if x["type"] == "device.status" and x["data"]["state"] == "online"
                )
                >= 2
            )
        )
        r.sim.present_card(KNOWN)
        await r.sub.wait_for(lambda: bool(r.door_events("denied")))
        denied = r.door_events("denied")[0]
        assert denied["data"]["card"] == KNOWN
        assert denied["data"]["reason"] == "door_locked"
        assert not r.sim.node.pulses
        assert not r.door_events("granted")
