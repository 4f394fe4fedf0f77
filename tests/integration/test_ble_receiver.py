"""The BLE receiver driver against its simulator over a real pty
(PROTOCOLS.md "Elder-care wearables", CONTRACT.md ``wearable.*`` / ``device.status``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceState, Driver, Priority, ReadingType, SystemClock
from drivers.ble_receiver import BleReceiverConfig, BleReceiverDriver, build_driver
from drivers.sim.ble_receiver import BleReceiverSimulator, make_simulator
from tests.devices import driven
from tests.fakes import WAIT_S, RecordingSink, status_is, typed, wait_until

pytestmark = pytest.mark.integration

BTHOME = "A4C138000001"  # sorted first: the simulator makes it a BTHome button
IBS = "C1A2B3C4D5E6"  # sorted second: an iBS01G


class Rig:
    def __init__(
        self, sim: BleReceiverSimulator, driver: BleReceiverDriver, sink: RecordingSink
    ) -> None:
        self.sim = sim
        self.driver = driver
        self.sink = sink
        self.syncs = 0

    def counter(self, name: str) -> int:
        return self.driver.health.counters.get(name, 0)

    async def all_lines_read(self) -> None:
        """Every line the simulator has printed or scheduled has been through the
        driver: a sentinel report of another type is read after all of them."""
        await self.sim.drained()
        before = self.counter("reports_ignored")
        self.sim.emit_raw(b"$SYNC,1\r\n")
        self.syncs += 1
        await wait_until(lambda: self.counter("reports_ignored") > before)

    async def online(self, mac: str = BTHOME) -> None:
        """Beacon until the driver reports the receiver online."""
        async with asyncio.timeout(WAIT_S):
            while self.driver.health.state is not DeviceState.ONLINE:
                mark = len(self.sink.readings)
                self.sim.beacon(mac)
                with contextlib.suppress(TimeoutError):
                    await self.sink.wait_for(status_is(DeviceState.ONLINE), after=mark, timeout=0.3)


def serial_driver(config: BleReceiverConfig, sink: RecordingSink) -> Driver:
    return build_driver(config, sink=sink, clock=SystemClock())


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **overrides: Any) -> AsyncIterator[Rig]:
    settings: dict[str, Any] = {
        "id": "ble-hall-1",
        "kind": "ble_receiver",
        "simulate": True,
        "wearers": {"a4:c1:38:00:00:01": "band-mei", IBS.lower(): "band-li"},
        **overrides,
    }
    config = BleReceiverConfig.model_validate(settings)
    sim = make_simulator(config, tmp_path, ambient=False)
    async with driven(sim, config, serial_driver) as (driver, sink):
        assert isinstance(driver, BleReceiverDriver)
        yield Rig(sim, driver, sink)


async def test_bthome_sos_once_per_press(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.online()
        rig.sim.press(BTHOME, repeats=6, interval_s=0.02)
        sos = await rig.sink.wait_for(typed(ReadingType.WEARABLE_SOS))
        assert sos.device == "ble-hall-1"
        assert sos.priority is Priority.ALARM
        assert sos.data["wearer"] == "band-mei"
        assert sos.data["battery"] == 95
        assert sos.data["event"] == "press"
        assert isinstance(sos.data["rssi"], int)
        await rig.all_lines_read()
        assert len(rig.sink.of_type(ReadingType.WEARABLE_SOS)) == 1  # six repeats, one alarm
        rig.sim.press(BTHOME, repeats=3, interval_s=0.02)  # a second press
        await rig.all_lines_read()
        assert len(rig.sink.of_type(ReadingType.WEARABLE_SOS)) == 2


async def test_ibs01_sos_and_fall(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.online(IBS)
        rig.sim.press(IBS, repeats=5, interval_s=0.02)
        rig.sim.fall(IBS, repeats=5, interval_s=0.02)
        sos = await rig.sink.wait_for(typed(ReadingType.WEARABLE_SOS))
        fall = await rig.sink.wait_for(typed(ReadingType.WEARABLE_FALL))
        assert sos.data == {
            "wearer": "band-li",
            "battery": None,
            "battery_v": 3.0,
            "rssi": -65,
            "source": "iBS01G",
        }
        assert fall.priority is Priority.ALARM
        assert fall.data["wearer"] == "band-li"
        await rig.all_lines_read()
        assert len(rig.sink.of_type(ReadingType.WEARABLE_SOS)) == 1  # hold-off
        assert len(rig.sink.of_type(ReadingType.WEARABLE_FALL)) == 1


async def test_vitals_rate_limited_and_strangers_dropped(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.online()
        rig.sim.beacon(IBS)
        mei = await rig.sink.wait_for(typed(ReadingType.WEARABLE_VITALS, wearer="band-mei"))
        li = await rig.sink.wait_for(typed(ReadingType.WEARABLE_VITALS, wearer="band-li"))
        assert mei.priority is Priority.ROUTINE
        assert mei.data["battery"] == 95
        assert li.data["battery_v"] == 3.0
        strangers = rig.sim.stranger_beacons(5)
        rig.sim.set_battery(BTHOME, pct=80)  # within the interval: no new vitals
        await rig.all_lines_read()
        assert rig.counter("beacons_dropped") == 5
        assert len(rig.sink.of_type(ReadingType.WEARABLE_VITALS)) == 2
        text = repr([dict(r.data) for r in rig.sink.readings])
        assert not any(mac in text for mac in strangers)


async def test_presence_absent_then_present(tmp_path: Path) -> None:
    async with running(tmp_path, absent_after_s=0.6) as rig:
        await rig.online()
        absent = await rig.sink.wait_for(
            typed(ReadingType.WEARABLE_PRESENCE, wearer="band-mei", state="absent")
        )
        assert absent.priority is Priority.ROUTINE
        # the never-heard band is absent too, counted from the start
        await rig.sink.wait_for(typed(ReadingType.WEARABLE_PRESENCE, wearer="band-li"))
        mark = len(rig.sink.readings)
        rig.sim.beacon(BTHOME)
        await rig.sink.wait_for(
            typed(ReadingType.WEARABLE_PRESENCE, wearer="band-mei", state="present"), after=mark
        )


async def test_garbage_and_other_reports_counted(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        await rig.online()
        rig.sim.send_garbage()
        rig.sim.emit_raw(b"\x00\xffjunk\r\n")
        rig.sim.emit_raw(b"$RSPR,A4C138000001,001122334455,-80,0909\r\n")
        rig.sim.press(BTHOME, repeats=2, interval_s=0.02)
        await rig.sink.wait_for(typed(ReadingType.WEARABLE_SOS))
        await rig.all_lines_read()
        assert rig.counter("lines_discarded") == 2
        assert rig.counter("reports_ignored") == 1 + rig.syncs


async def test_unplug_replug_and_silence(tmp_path: Path) -> None:
    async with running(tmp_path, silent_offline_s=0.8) as rig:
        await rig.online()
        mark = len(rig.sink.readings)
        rig.sim.unplug()
        offline = await rig.sink.wait_for(status_is(DeviceState.OFFLINE), after=mark)
        assert offline.priority is Priority.ALARM
        assert offline.data["detail"].startswith("port:")
        rig.sim.replug()
        await rig.online()
        mark = len(rig.sink.readings)
        rig.sim.set_silent(True)  # the receiver hangs: port fine, nothing printed
        silent = await rig.sink.wait_for(status_is(DeviceState.OFFLINE), after=mark)
        assert silent.data["detail"].startswith("receiver silent")
        rig.sim.set_silent(False)
        await rig.online()
