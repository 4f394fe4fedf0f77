"""Elder-care wearable receiver driver, ``ble-gprp-v1`` (PROTOCOLS.md, "Elder-care wearables").

The configured device is the BLE receiver (an Ingics iGS-style box printing
``$GPRP`` lines on USB serial); the wristbands and pendants it hears are the
configured ``wearers``. Emits CONTRACT.md ``wearable.sos`` / ``wearable.fall``
(alarm), ``wearable.vitals`` and ``wearable.presence`` (routine), and the
receiver's ``device.status`` through ``DeviceHealth``.

``WearableTracker`` is the policy, a pure state machine with time passed in:

- only configured bands are reported; every other beacon is dropped and
  counted (no tracking of passers-by);
- one SOS per press: BTHome bands by packet id (a repeat of the same id while
  the band keeps advertising it is the same press), iBS01 bands by a hold-off
  window after the last SOS; one fall per fall the same way;
- vitals (battery) at most once per ``vitals_interval_s`` per wearer;
- ``absent`` once a band has been unheard for ``absent_after_s``, ``present``
  when it is heard again.

Battery: BTHome reports percent (``battery``); iBS01 bands report volts, which
go out as ``battery_v`` with ``battery: null`` (no percent curve is invented).
MACs and wearer ids are logged only at DEBUG, partly masked (STYLE.md §6).

Longer than 400 lines because the wearables' state (SOS and fall hold-offs, vitals
pacing, presence) is a pure tracker here beside the thin driver loop, and is tested
without I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import (
    Clock,
    DeviceState,
    Driver,
    Priority,
    Reading,
    ReadingSink,
    ReadingType,
)
from drivers.codecs.ble_gprp import (
    BtHomeButton,
    BtHomePayload,
    Discarded,
    GprpDecoder,
    GprpError,
    GprpReport,
    Ignored,
    IngicsPayload,
    decode_payload,
)
from drivers.config.ble_receiver import BleReceiverConfig, mask, normalise_mac
from drivers.serial_device import SerialDeviceDriver
from drivers.transports.serial import SerialTransport, run_serial

__all__ = [
    "BleReceiverConfig",
    "BleReceiverDriver",
    "WearableEvent",
    "WearableTracker",
    "build_driver",
    "mask",
    "normalise_mac",
]

_LOGGER = logging.getLogger(__name__)

TICK_S = 0.5
"""Longest a read waits before presence and silence are re-checked."""


# --- policy (pure) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WearableEvent:
    """What the tracker decided to report."""

    type: ReadingType
    priority: Priority
    data: Mapping[str, Any]


@dataclass(slots=True)
class _Band:
    wearer: str
    last_heard: float
    present: bool | None = None
    last_sos: float | None = None
    last_fall: float | None = None
    button_packet: int | None = None
    button_packet_seen: float | None = None
    last_vitals: float | None = None


def _held_off(last: float | None, now: float, holdoff_s: float) -> bool:
    """Whether an alarm at ``now`` repeats the one at ``last`` (within the hold-off)."""
    return last is not None and now - last < holdoff_s


def _alarm(type_: ReadingType, band: _Band, data: Mapping[str, Any]) -> WearableEvent:
    return WearableEvent(type_, Priority.ALARM, {"wearer": band.wearer, **data})


class WearableTracker:
    """Dedupe, rate limits and presence for the configured bands. Time is passed in."""

    def __init__(
        self,
        wearers: Mapping[str, str],
        *,
        now: float,
        sos_holdoff_s: float = 30.0,
        fall_holdoff_s: float = 30.0,
        vitals_interval_s: float = 600.0,
        absent_after_s: float = 900.0,
    ) -> None:
        # A band not heard since start counts from start: absent only after the
        # full absent_after_s, not at once when the gateway boots.
        self._bands = {mac: _Band(wearer, now) for mac, wearer in wearers.items()}
        self._sos_holdoff_s = sos_holdoff_s
        self._fall_holdoff_s = fall_holdoff_s
        self._vitals_interval_s = vitals_interval_s
        self._absent_after_s = absent_after_s

    def wearer(self, mac: str) -> str | None:
        band = self._bands.get(mac)
        return None if band is None else band.wearer

    def observe(
        self,
        mac: str,
        payload: IngicsPayload | BtHomePayload | None,
        *,
        now: float,
        rssi: int | None = None,
    ) -> list[WearableEvent]:
        """One advertisement of a band; unknown MACs give nothing."""
        band = self._bands.get(mac)
        if band is None:
            return []
        out: list[WearableEvent] = []
        band.last_heard = now
        if band.present is False:
            out.append(self._presence(band, "present"))
        band.present = True
        if isinstance(payload, IngicsPayload):
            self._ingics(band, payload, now, rssi, out)
        elif isinstance(payload, BtHomePayload):
            self._bthome(band, payload, now, rssi, out)
        return out

    def resume(self, now: float) -> None:
        """The receiver is back after an outage: give every band a fresh grace period.

        Bands were not unheard while the receiver was down, only unlistened to.
        """
        for band in self._bands.values():
            if band.present is not False:
                band.last_heard = max(band.last_heard, now)

    def tick(self, now: float) -> list[WearableEvent]:
        """Presence transitions due at ``now``."""
        out = []
        for band in self._bands.values():
            if band.present is not False and now - band.last_heard >= self._absent_after_s:
                band.present = False
                out.append(self._presence(band, "absent"))
        return out

    @staticmethod
    def _presence(band: _Band, state: str) -> WearableEvent:
        return WearableEvent(
            ReadingType.WEARABLE_PRESENCE, Priority.ROUTINE, {"wearer": band.wearer, "state": state}
        )

    def _ingics(
        self,
        band: _Band,
        p: IngicsPayload,
        now: float,
        rssi: int | None,
        out: list[WearableEvent],
    ) -> None:
        battery = {"battery": None, "battery_v": p.battery_v}
        if p.button and not _held_off(band.last_sos, now, self._sos_holdoff_s):
            band.last_sos = now
            sos = {**battery, "rssi": rssi, "source": p.model}
            out.append(_alarm(ReadingType.WEARABLE_SOS, band, sos))
        if p.fall and not _held_off(band.last_fall, now, self._fall_holdoff_s):
            band.last_fall = now
            out.append(_alarm(ReadingType.WEARABLE_FALL, band, {"rssi": rssi, "source": p.model}))
        self._vitals(band, battery, now, rssi, out)

    def _bthome(
        self,
        band: _Band,
        p: BtHomePayload,
        now: float,
        rssi: int | None,
        out: list[WearableEvent],
    ) -> None:
        battery: dict[str, Any] = {"battery": p.battery_pct}
        if p.voltage_v is not None:
            battery["battery_v"] = p.voltage_v
        if p.button:  # 0 / None: no button event in this advertisement
            if p.packet_id is None:
                new = not _held_off(band.last_sos, now, self._sos_holdoff_s)
            else:
                # A band repeats one advertisement (same packet id) many times;
                # a new press has a new id. The id is forgotten once it has not
                # been heard for the hold-off, so an id reused after a band
                # reboot or wrap-around still counts as a new press.
                new = not (
                    band.button_packet == p.packet_id
                    and band.button_packet_seen is not None
                    and now - band.button_packet_seen < self._sos_holdoff_s
                )
                band.button_packet = p.packet_id
                band.button_packet_seen = now
            if new:
                band.last_sos = now
                try:
                    event = BtHomeButton(p.button).name.lower()
                except ValueError:
                    event = f"0x{p.button:02x}"
                sos = {**battery, "rssi": rssi, "source": "bthome", "event": event}
                out.append(_alarm(ReadingType.WEARABLE_SOS, band, sos))
        if p.battery_pct is not None or p.voltage_v is not None:
            self._vitals(band, battery, now, rssi, out)

    def _vitals(
        self,
        band: _Band,
        battery: Mapping[str, Any],
        now: float,
        rssi: int | None,
        out: list[WearableEvent],
    ) -> None:
        if band.last_vitals is not None and now - band.last_vitals < self._vitals_interval_s:
            return
        band.last_vitals = now
        out.append(
            WearableEvent(
                ReadingType.WEARABLE_VITALS,
                Priority.ROUTINE,
                {"wearer": band.wearer, **battery, "rssi": rssi},
            )
        )


# --- driver ---------------------------------------------------------------------------


class BleReceiverDriver(SerialDeviceDriver):
    """Driver for one BLE receiver; implements ``drivers.base.Driver``."""

    DEVICE_NOUN = "a BLE receiver"

    def __init__(self, config: BleReceiverConfig, *, sink: ReadingSink, clock: Clock) -> None:
        super().__init__(config, sink=sink, clock=clock)
        self.config = config
        self.tracker = WearableTracker(
            config.wearers,
            now=clock.monotonic(),
            sos_holdoff_s=config.sos_holdoff_s,
            fall_holdoff_s=config.fall_holdoff_s,
            vitals_interval_s=config.vitals_interval_s,
            absent_after_s=config.absent_after_s,
        )
        self._last_bytes = clock.monotonic()

    async def run(self) -> None:
        """Run until cancelled; reopens the port with backoff when it vanishes."""
        await run_serial(
            self.config.transport, self._session, on_up=self._on_up, on_down=self._on_down
        )

    async def _session(self, transport: SerialTransport) -> None:
        decoder = GprpDecoder()  # per connection: no half line survives a reopen
        self._last_bytes = self._clock.monotonic()
        while True:
            self._tick()
            try:
                async with asyncio.timeout(TICK_S):
                    data = await transport.read()
            except TimeoutError:
                continue
            self._last_bytes = self._clock.monotonic()
            if self._online("receiving"):
                self.tracker.resume(self._last_bytes)
            for event in decoder.feed(data):
                self._handle(event)

    def _tick(self) -> None:
        now = self._clock.monotonic()
        if self.health.state is DeviceState.ONLINE:
            # Absence is only known while the receiver is listening.
            self._emit(self.tracker.tick(now))
        self._offline_when_silent(
            now - self._last_bytes,
            self.config.silent_offline_s,
            detail="receiver silent",
        )

    def _handle(self, event: GprpReport | Ignored | Discarded) -> None:
        if isinstance(event, Discarded):
            self.health.count("lines_discarded")
            self.health.count("bytes_discarded", event.count)
            return
        if isinstance(event, Ignored):
            self.health.count("reports_ignored")
            return
        self.health.count("reports")
        wearer = self.tracker.wearer(event.tag_mac)
        if wearer is None:
            self.health.count("beacons_dropped")  # passers-by: counted, never tracked
            return
        try:
            payload = decode_payload(event.adv)
        except GprpError:
            self.health.count("payloads_undecodable")
            payload = None
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug(
                "band heard device=%s band=%s wearer=%s rssi=%d",
                self.device_id,
                mask(event.tag_mac),
                mask(wearer),
                event.rssi,
            )
        self._emit(
            self.tracker.observe(
                event.tag_mac, payload, now=self._clock.monotonic(), rssi=event.rssi
            )
        )

    def _emit(self, events: list[WearableEvent]) -> None:
        for e in events:
            self._sink.put(
                Reading(
                    device=self.device_id,
                    type=e.type,
                    data=e.data,
                    priority=e.priority,
                    wall_ts=self._clock.wall(),
                    mono_ts=self._clock.monotonic(),
                )
            )
            self.health.count("readings")


def build_driver(config: BleReceiverConfig, *, sink: ReadingSink, clock: Clock) -> Driver:
    """The supervisor's factory for ``kind: ble_receiver``."""
    return BleReceiverDriver(config, sink=sink, clock=clock)
