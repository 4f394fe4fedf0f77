"""The UHF reader driver against its simulator over a real pty
(PROTOCOLS.md "UHF RFID reader", CONTRACT.md ``ebike.pass`` / ``device.status``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceState, Driver, Priority, Reading, ReadingType, SystemClock
from drivers.codecs.chafon_uhf import GetWorkMode, Inventory, SetWorkMode
from drivers.sim.uhf_reader import UhfReaderSimulator, make_simulator
from drivers.uhf_reader import UhfReaderConfig, UhfReaderDriver, build_driver
from tests.devices import driven
from tests.fakes import RecordingSink, status_is, wait_until

pytestmark = pytest.mark.integration

EPC = "E2000017221100881520ABCD"


def pass_of(epc: str) -> Callable[[Reading], bool]:
    return lambda r: r.type is ReadingType.EBIKE_PASS and r.data["epc"] == epc


class Rig:
    def __init__(
        self, sim: UhfReaderSimulator, driver: UhfReaderDriver, sink: RecordingSink
    ) -> None:
        self.sim = sim
        self.driver = driver
        self.sink = sink


def serial_driver(config: UhfReaderConfig, sink: RecordingSink) -> Driver:
    return build_driver(config, sink=sink, clock=SystemClock())


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, *, max_tags_per_frame: int = 4, **overrides: Any
) -> AsyncIterator[Rig]:
    settings: dict[str, Any] = {
        "id": "uhf-gate-1",
        "kind": "uhf_reader",
        "simulate": True,
        "poll_interval_ms": 50,
        "reply_timeout_ms": 400,
        "collapse_window_s": 0.4,
        "offline_after_s": 1.5,
        "probe_interval_s": 0.5,
        **overrides,
    }
    config = UhfReaderConfig.model_validate(settings)
    sim = make_simulator(config, tmp_path, ambient=False)
    sim.max_tags_per_frame = max_tags_per_frame
    async with driven(sim, config, serial_driver) as (driver, sink):
        assert isinstance(driver, UhfReaderDriver)
        yield Rig(sim, driver, sink)


def _ts(text: str) -> datetime:
    assert text.endswith("Z") and len(text) == 24, text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_answer_mode_pass(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        online = await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        assert online.priority is Priority.ROUTINE
        assert rig.driver.health.state is DeviceState.ONLINE
        # The driver put the reader in answer mode, then polls inventory: the
        # simulator decoded exactly PROTOCOLS.md's golden bytes.
        await wait_until(lambda: any(isinstance(c, Inventory) for c in rig.sim.commands))
        first = rig.sim.commands[0]
        assert isinstance(first, SetWorkMode)
        assert first.encode() == bytes.fromhex("0A 00 35 00 00 00 00 00 00 C1 8C")
        inventory = next(c for c in rig.sim.commands if isinstance(c, Inventory))
        assert inventory.encode() == bytes.fromhex("04 00 01 DB 4B")

        rig.sim.inject_pass(EPC, reads=5, duration_s=0.2)
        reading = await rig.sink.wait_for(pass_of(EPC))
        assert reading.device == "uhf-gate-1"
        assert reading.priority is Priority.ROUTINE
        data = dict(reading.data)
        assert set(data) == {"epc", "rssi", "antenna", "first_seen", "last_seen", "count"}
        assert data["epc"] == EPC
        assert data["rssi"] is None  # chafon-uhf-v1 carries no RSSI
        assert data["antenna"] == 1
        assert data["count"] == 5  # one read per inventory, five reads
        first_seen, last_seen = _ts(data["first_seen"]), _ts(data["last_seen"])
        assert first_seen <= last_seen
        # ts of the reading is when the bike passed, not when the window closed
        assert abs(reading.wall_ts - first_seen.timestamp()) < 0.002
        assert len(rig.sink.of_type(ReadingType.EBIKE_PASS)) == 1


async def test_multi_frame_inventory(tmp_path: Path) -> None:
    epcs = [f"E20000172211008815200{i:03X}" for i in range(10)]
    async with running(tmp_path, max_tags_per_frame=4) as rig:
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        for epc in epcs:
            rig.sim.inject_pass(epc, reads=1, duration_s=0)
        for epc in epcs:
            reading = await rig.sink.wait_for(pass_of(epc))
            assert reading.data["count"] == 1
        assert sorted(r.data["epc"] for r in rig.sink.of_type(ReadingType.EBIKE_PASS)) == epcs


async def test_scan_mode_pushes(tmp_path: Path) -> None:
    async with running(tmp_path, mode="scan") as rig:
        await wait_until(lambda: rig.sim.mode.is_scan)
        first = rig.sim.commands[0]
        assert first.encode() == bytes.fromhex("0A 00 35 01 02 04 00 01 00 56 F5")
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        rig.sim.inject_pass(EPC, reads=8, duration_s=0.3)
        reading = await rig.sink.wait_for(pass_of(EPC))
        assert reading.data["count"] == 8
        assert reading.data["rssi"] is None
        # Scan mode never polls; a quiet reader is probed with "get work mode".
        assert not any(isinstance(c, Inventory) for c in rig.sim.commands)
        await wait_until(lambda: any(isinstance(c, GetWorkMode) for c in rig.sim.commands))
        assert rig.driver.health.state is DeviceState.ONLINE


async def test_scan_mode_reconfigures_after_reader_reset(tmp_path: Path) -> None:
    async with running(tmp_path, mode="scan") as rig:
        await wait_until(lambda: rig.sim.mode.is_scan)
        rig.sim.mode = rig.sim.mode.answer()  # the reader rebooted into answer mode
        await wait_until(lambda: rig.sim.mode.is_scan)


async def test_unplug_then_replug(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        mark = len(rig.sink.readings)
        rig.sim.unplug()
        offline = await rig.sink.wait_for(status_is(DeviceState.OFFLINE), after=mark)
        assert offline.priority is Priority.ALARM
        assert offline.data["detail"].startswith("port:")
        mark = len(rig.sink.readings)
        rig.sim.replug()
        await rig.sink.wait_for(status_is(DeviceState.ONLINE), after=mark)
        rig.sim.inject_pass(EPC, reads=3, duration_s=0.1)
        assert (await rig.sink.wait_for(pass_of(EPC))).data["count"] == 3
        assert rig.driver.health.counters["port_down"] >= 1


async def test_garbage_is_counted_and_skipped(tmp_path: Path) -> None:
    async with running(tmp_path, mode="scan") as rig:
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        rig.sim.send_garbage(bytes.fromhex("FF 13 00 01 67 61 72 62 00 09"))
        rig.sim.inject_pass(EPC, reads=4, duration_s=0.2)
        rig.sim.send_garbage(b"\x00\x00\x07noise")
        reading = await rig.sink.wait_for(pass_of(EPC))
        assert reading.data["count"] == 4
        counters = rig.driver.health.counters
        assert counters["frames_discarded"] >= 1
        assert counters["bytes_discarded"] >= 10


async def test_silent_reader_goes_offline_and_back(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        mark = len(rig.sink.readings)
        rig.sim.set_answering(False)
        offline = await rig.sink.wait_for(status_is(DeviceState.OFFLINE), after=mark)
        assert offline.data["detail"].startswith("no reply")
        assert rig.driver.health.counters["timeouts"] >= 1
        mark = len(rig.sink.readings)
        rig.sim.set_answering(True)
        await rig.sink.wait_for(status_is(DeviceState.ONLINE), after=mark)


async def test_open_passes_are_reported_at_shutdown(tmp_path: Path) -> None:
    async with running(tmp_path, collapse_window_s=30.0, mode="scan") as rig:
        await rig.sink.wait_for(status_is(DeviceState.ONLINE))
        rig.sim.inject_pass(EPC, reads=2, duration_s=0.05)
        await wait_until(lambda: rig.driver.health.counters.get("tag_reads", 0) >= 2)
        sink = rig.sink
    # the driver task was cancelled on leaving the block
    (reading,) = sink.of_type(ReadingType.EBIKE_PASS)
    assert reading.data["count"] == 2


async def test_missing_port_is_offline_at_start(tmp_path: Path) -> None:
    config = UhfReaderConfig.model_validate(
        {
            "id": "uhf-gate-1",
            "kind": "uhf_reader",
            "transport": {"port": str(tmp_path / "nothing-here")},
        }
    )
    sink = RecordingSink()
    driver = build_driver(config, sink=sink, clock=SystemClock())
    task = asyncio.create_task(driver.run(), name="uhf-driver")
    try:
        reading = await sink.wait_for(status_is(DeviceState.OFFLINE))
        assert "open failed" in reading.data["detail"]
        assert driver.actions() == frozenset()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
