"""Several devices under the real daemon: one unplugged, the others keep reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.temperature_gate import TemperatureGateSimulator
from drivers.sim.uhf_reader import UhfReaderSimulator
from drivers.temperature_gate import TemperatureGateConfig
from drivers.uhf_reader import UhfReaderConfig
from tests.broker import SharedBroker
from tests.daemon import Daemon
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration

EPC = "E2000017221100881520ABCD"


def statuses(sub: Subscriber, device: str) -> list[str]:
    return [
        r["data"]["state"]
        for r in sub.readings()
        if r["type"] == "device.status" and r["device"] == device
    ]


def temperatures(sub: Subscriber) -> list[dict[str, Any]]:
    return [r for r in sub.readings() if r["type"] == "temperature.body"]


async def test_unplugged_reader_goes_offline_and_back_while_the_gate_keeps_reading(
    tmp_path: Path, shared_broker: SharedBroker
) -> None:
    uhf_cfg = {
        "id": "ebike-reader-1",
        "kind": "uhf_reader",
        "transport": {"type": "serial", "baudrate": 57600},
        "offline_after_s": 2,
    }
    gate_cfg = {
        "id": "temp-gate-1",
        "kind": "temperature_gate",
        "transport": {"type": "modbus_rtu"},
        "poll_interval_ms": 100,
    }
    uhf = UhfReaderSimulator(
        UhfReaderConfig.model_validate({**uhf_cfg, "simulate": True}),
        tmp_path / "uhf",
        ambient=False,
    )
    gate = TemperatureGateSimulator(
        TemperatureGateConfig.model_validate(gate_cfg), tmp_path / "gate", ambient=False
    )
    (tmp_path / "uhf").mkdir()
    uhf_port = (await uhf.start()).port
    gate_port = (await gate.start()).port
    uhf_cfg["transport"]["port"] = uhf_port
    gate_cfg["transport"]["port"] = gate_port
    sub = shared_broker.subscriber()
    await sub.start()
    daemon = Daemon(
        shared_broker.write_config(
            tmp_path / "gw" / "config.yaml",
            devices=[uhf_cfg, gate_cfg],
        )
    )
    daemon.start()
    try:
        await sub.wait_for(
            lambda: (
                statuses(sub, "ebike-reader-1") == ["online"]
                and statuses(sub, "temp-gate-1") == ["online"]
            )
        )
        uhf.inject_pass(EPC, reads=5, duration_s=0.5)
        uhf.unplug()
        await sub.wait_for(lambda: statuses(sub, "ebike-reader-1")[-1:] == ["offline"])
        offline = next(
            r
            for r in sub.readings()
            if r["type"] == "device.status" and r["data"]["state"] == "offline"
        )
        assert offline["priority"] == "alarm"
        # The gate keeps being read while the reader is gone.
        for celsius in (36.4, 36.9, 38.1):
            gate.inject_reading(celsius)
            await sub.wait_for(
                lambda c=celsius: any(r["data"]["celsius"] == c for r in temperatures(sub))
            )
        uhf.replug()
        await sub.wait_for(lambda: statuses(sub, "ebike-reader-1")[-1:] == ["online"])
        uhf.inject_pass(EPC, reads=5, duration_s=0.5)
        await sub.wait_for(
            lambda: any(r["type"] == "ebike.pass" for r in sub.readings()), timeout=30
        )
    finally:
        daemon.stop()
        await sub.stop()
        await uhf.stop()
        await gate.stop()
    fever = [r for r in temperatures(sub) if r["data"]["celsius"] == 38.1]
    assert fever[0]["priority"] == "alarm" and fever[0]["data"]["fever"] is True
    assert statuses(sub, "temp-gate-1") == ["online"], "the gate never went offline"
    ebike = next(r for r in sub.readings() if r["type"] == "ebike.pass")
    assert ebike["data"]["epc"] == EPC and ebike["data"]["count"] >= 1
    await asyncio.sleep(0)
