"""Simulated BLE receiver, ``ble-gprp-v1`` (PROTOCOLS.md, "Elder-care wearables").

Prints ``$GPRP`` lines over a real pseudo-terminal (``PtyLink``), encoded with
``drivers.codecs.ble_gprp``, for the bands in the configuration. Each band is
either a BTHome v2 button (packet id, battery %, button events) or an Ingics
iBS01G (battery volts, button / moving / fall bits); by default the configured
bands alternate between the two kinds in MAC order.

Scriptable from tests: ``press`` (SOS button), ``fall``, ``set_battery``,
``beacon``, ``stranger_beacons`` (unknown MACs), ``send_garbage``,
``set_silent`` (the receiver prints nothing), ``unplug`` / ``replug``. With
``wire_time=True`` every byte takes 10 bits / baud on the line.

Ambient mode (the shipped config): every band advertises its routine beacon
(battery, no event) about once a second, and a few strangers and other report
types go by. Alarms (SOS, fall) only ever come from explicit calls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drivers.codecs.ble_gprp import BtHomeButton, GprpReport, encode_bthome, encode_ingics
from drivers.sim.base import SimEndpoint
from drivers.sim.config import BleReceiverSimConfig
from drivers.sim.pty import PtyLink
from drivers.sim.scheduler import Action, SimScheduler

__all__ = ["BandKind", "BleReceiverSimulator", "make_simulator"]

_LOGGER = logging.getLogger(__name__)

BandKind = Literal["bthome", "ibs01"]

RECEIVER_MAC = "001122334455"
AMBIENT_PERIOD_S = 1.0
"""Ambient mode: each band's routine advertisement period."""


@dataclass(slots=True)
class _Band:
    mac: str
    kind: BandKind
    rssi: int = -65
    packet_id: int = 0
    battery_pct: int = 95
    battery_v: float = 3.0


class BleReceiverSimulator:
    """One simulated receiver on a pty; implements ``drivers.sim.base.Simulator``."""

    def __init__(
        self,
        config: BleReceiverSimConfig,
        workdir: Path,
        *,
        ambient: bool = True,
        wire_time: bool = False,
        receiver_mac: str = RECEIVER_MAC,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.link = PtyLink(workdir / f"{config.id}.tty")
        self.ambient = ambient
        self.wire_time = wire_time
        self.baudrate = config.transport.baudrate
        self.receiver_mac = receiver_mac
        self.silent = False
        self.lines_sent = 0
        self._rng = random.Random(seed)
        self.bands: dict[str, _Band] = {
            mac: _Band(mac, "bthome" if i % 2 == 0 else "ibs01")
            for i, mac in enumerate(sorted(config.wearers))
        }
        self.scheduler = SimScheduler(
            f"sim-ble-{config.id}", self.link.write, baudrate=self.baudrate, wire_time=wire_time
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # Simulator protocol

    async def start(self) -> SimEndpoint:
        """Plug the pty and start printing; returns the port path for the driver."""
        self._loop = asyncio.get_running_loop()
        self.link.plug()
        self.scheduler.start()
        if self.ambient:
            self._at(self._loop.time() + 0.2, self._ambient)
        return SimEndpoint(port=str(self.link.path))

    async def stop(self) -> None:
        """Stop the scheduler and release the pty."""
        await self.scheduler.stop()
        self.link.unplug()

    # scripting

    @property
    def path(self) -> Path:
        return self.link.path

    def unplug(self) -> None:
        """Pull the receiver's USB cable: the driver's reads fail, the path goes."""
        self.link.unplug()

    def replug(self) -> None:
        self.link.plug()

    def set_silent(self, silent: bool) -> None:
        """True: the receiver prints nothing (hung firmware), the port stays."""
        self.silent = silent

    def set_band_kind(self, mac: str, kind: BandKind) -> None:
        self._band(mac).kind = kind

    def set_battery(
        self, mac: str, *, pct: int | None = None, volts: float | None = None, send: bool = True
    ) -> None:
        """Change a band's battery; BTHome bands bump their packet id (new data)."""
        band = self._band(mac)
        if pct is not None:
            band.battery_pct = pct
        if volts is not None:
            band.battery_v = volts
        band.packet_id = (band.packet_id + 1) & 0xFF
        if send:
            self.beacon(mac)

    def beacon(self, mac: str, *, rssi: int | None = None) -> None:
        """One routine advertisement (no event) of a configured band."""
        band = self._band(mac)
        if band.kind == "bthome":
            adv = encode_bthome(packet_id=band.packet_id, battery_pct=band.battery_pct)
        else:
            adv = encode_ingics(battery_v=band.battery_v)
        self.emit(GprpReport(mac, self.receiver_mac, rssi or band.rssi, adv))

    def press(
        self,
        mac: str,
        *,
        repeats: int = 5,
        interval_s: float = 0.05,
        event: int = BtHomeButton.PRESS,
    ) -> None:
        """One SOS button press, advertised ``repeats`` times as a real band does."""
        band = self._band(mac)
        if band.kind == "bthome":
            band.packet_id = (band.packet_id + 1) & 0xFF
            adv = encode_bthome(
                packet_id=band.packet_id,
                battery_pct=band.battery_pct,
                button=event,
                trigger_based=True,
            )
        else:
            adv = encode_ingics(battery_v=band.battery_v, button=True)
        self._repeat(GprpReport(mac, self.receiver_mac, band.rssi, adv), repeats, interval_s)

    def fall(self, mac: str, *, repeats: int = 5, interval_s: float = 0.05) -> None:
        """A fall detected by an iBS01G band, advertised ``repeats`` times."""
        band = self._band(mac)
        if band.kind != "ibs01":
            raise ValueError("only iBS01G bands detect falls")
        adv = encode_ingics(battery_v=band.battery_v, moving=True, fall=True)
        self._repeat(GprpReport(mac, self.receiver_mac, band.rssi, adv), repeats, interval_s)

    def stranger_beacons(self, n: int = 1) -> list[str]:
        """Advertisements of ``n`` random unknown MACs (passers-by); returns the MACs."""
        macs = []
        for _ in range(n):
            mac = self._rng.randbytes(6).hex().upper()
            while mac in self.bands:
                mac = self._rng.randbytes(6).hex().upper()
            macs.append(mac)
            adv = encode_bthome(packet_id=self._rng.randrange(256), battery_pct=80)
            self.emit(GprpReport(mac, self.receiver_mac, self._rng.randint(-95, -60), adv))
        return macs

    def send_garbage(self, data: bytes | None = None) -> bytes:
        """Noise on the line (a broken line plus a terminator by default)."""
        if data is None:
            noise = self._rng.randbytes(8).translate(None, b"\r\n$")  # one broken line, exactly
            data = b"$GPRP,12,zz" + noise + b"\r\n"
        self._send(data)
        return data

    def emit(self, report: GprpReport) -> None:
        """Print one report line."""
        self._send(report.encode())

    def emit_raw(self, line: bytes) -> None:
        self._send(line)

    async def drained(self, *, timeout_s: float = 30.0) -> None:
        """Wait until every scheduled line has been written (meaningful with
        ``ambient=False``: ambient mode always has the next beacon scheduled).

        Raises:
            TimeoutError: lines are still scheduled after ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            await self.scheduler.drained.wait()

    def line_time_s(self, n_bytes: int) -> float:
        return self.scheduler.wire_time_s(n_bytes)

    # internals

    def _band(self, mac: str) -> _Band:
        key = mac.replace(":", "").upper()
        band = self.bands.get(key)
        if band is None:
            band = self.bands[key] = _Band(key, "bthome")
        return band

    def _repeat(self, report: GprpReport, repeats: int, interval_s: float) -> None:
        assert self._loop is not None, "start() first"
        line = report.encode()
        now = self._loop.time()
        for i in range(repeats):
            self._at(now + i * interval_s, functools.partial(self._send, line))

    def _at(self, due: float, action: Action) -> None:
        self.scheduler.at(due, action)

    def _send(self, data: bytes) -> None:
        if self.silent:
            return
        self.lines_sent += 1
        self.scheduler.send(data)

    def _ambient(self) -> None:
        assert self._loop is not None
        for mac in self.bands:
            if self._rng.random() < 0.9:
                self.beacon(mac, rssi=self._rng.randint(-80, -55))
            if self._rng.random() < 0.002:
                band = self.bands[mac]
                self.set_battery(mac, pct=max(band.battery_pct - 1, 5), send=False)
        self.stranger_beacons(self._rng.randint(0, 3))
        if self._rng.random() < 0.2:
            other = self._rng.randbytes(6).hex().upper()
            self._send(f"$RSPR,{other},{self.receiver_mac},-80,\r\n".encode())
        self._at(self._loop.time() + AMBIENT_PERIOD_S, self._ambient)


def make_simulator(
    config: BleReceiverSimConfig, workdir: Path, *, ambient: bool = True, wire_time: bool = False
) -> BleReceiverSimulator:
    """The supervisor's and the tests' factory for ``kind: ble_receiver``."""
    return BleReceiverSimulator(config, workdir, ambient=ambient, wire_time=wire_time)
