"""A simulated UHPPOTE UT0311-L0x door controller on loopback UDP (PROTOCOL-UHPPOTE.md).

The controller side of the protocol: it answers 64-byte requests on a UDP
socket and pushes 0x20 event frames to the listener set with 0x90. The field
encodings are the ``uhppoted`` library's own ``pack_*`` / ``unpack_*`` helpers;
the library is a client, so reading requests and writing replies (the device
side) is done here, not in the driver.

What it keeps, as a controller does: a card table (with tombstones, so
``get-card-by-index`` can walk it), time profiles, an event log with
monotonic indexes in a bounded ring (the oldest events are dropped in chunks:
``get-event`` below the oldest answers type 0xFF, index 0), the host's event
bookmark (0xB2/0xB4), door modes and delays, record-special-events, a clock
(local wall time, set with 0x30) and the listener. An unlock (open-door 0x40,
a granted swipe, the exit button) energises the door's relay for the unlock
delay in force at that moment (0x80): changing the delay later does not
shorten or stretch it, and the door opening releases it. Every unlock is
recorded (``ControllerState.unlocks``, bounded). Script verbs: ``swipe``,
``open``/``close``/``button`` (door contact and exit button), ``reset``
(a factory reset: cards, profiles and special-event recording are wiped, a
reset event is recorded; the event log and listener stay),
``drop-pushes``/``deliver-pushes`` and ``unplug``/``replug`` (silence).

Like the reference simulator it is strict where the protocol is: a wrong
serial, an unknown function, a bad length or a wrong magic word get no reply.
Unlike it, the card table is not capped at 64 and card dates are checked at a
swipe (real firmware does).

Longer than 400 lines because it is a whole controller: one small handler
per function code (22 of them), the card, profile and event stores they
share, and the UDP endpoint with its script verbs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uhppoted import decode, encode

from drivers.sim.ambient import Ambient
from drivers.sim.base import SimEndpoint
from drivers.sim.config import UhppoteSimConfig
from drivers.sim.history import History

_LOGGER = logging.getLogger(__name__)

SOM = 0x17
MAGIC = 0x55AAAA55
FRAME_BYTES = 64
REMOTE_OPEN_CARD = 3922570474  # the reference simulator's card field for a remote open
EMPTY_DATETIME = bytes(7)
DEFAULT_EVENT_CAPACITY = 256
DEFAULT_DROP_CHUNK = 32
AMBIENT_PERIOD_S = 20.0
AMBIENT_STRANGER = 10058401
AMBIENT_STRANGER_SHARE = 0.2

# Event types and reasons (PROTOCOL-UHPPOTE.md §5).
TYPE_SWIPE = 0x01
TYPE_DOOR = 0x02
TYPE_ALARM = 0x03
REASON_OK = 1
REASON_NO_PRIVILEGE = 6
REASON_NORMALLY_CLOSED = 11
REASON_PROFILE = 15
REASON_DENIED = 18
REASON_BUTTON = 20
REASON_OPENED = 23
REASON_CLOSED = 24
REASON_POWER_ON = 28
REASON_RESET = 29
REASON_REMOTE_OPEN = 44

MODE_NORMALLY_OPEN = 1
MODE_NORMALLY_CLOSED = 2
MODE_CONTROLLED = 3


@dataclass(frozen=True, slots=True)
class SimCard:
    number: int
    start: dt.date
    end: dt.date
    doors: tuple[int, int, int, int]
    pin: int = 0


@dataclass(frozen=True, slots=True)
class SimUnlock:
    """One energising of a door's relay: ``seconds`` is the delay it ran for."""

    door: int
    seconds: int
    at: float
    """The controller's monotonic time then."""


@dataclass(frozen=True, slots=True)
class SimProfile:
    profile_id: int
    start: dt.date
    end: dt.date
    weekdays: tuple[bool, ...]
    segments: tuple[tuple[dt.time, dt.time], ...]
    linked: int = 0


@dataclass(frozen=True, slots=True)
class SimEvent:
    index: int
    type: int
    granted: bool
    door: int
    direction: int
    card: int
    timestamp: dt.datetime
    reason: int


@dataclass(slots=True)
class ControllerState:
    """Everything a controller holds; pure, the UDP part is ``UhppoteSimulator``."""

    serial: int
    address: str = "127.0.0.1"
    event_capacity: int = DEFAULT_EVENT_CAPACITY
    drop_chunk: int = DEFAULT_DROP_CHUNK
    clock: Callable[[], dt.datetime] = dt.datetime.now
    cards: dict[int, SimCard] = field(default_factory=dict)
    slots: list[int] = field(default_factory=list)  # card numbers by index; 0xFFFFFFFF = deleted
    profiles: dict[int, SimProfile] = field(default_factory=dict)
    events: list[SimEvent] = field(default_factory=list)
    last_index: int = 0
    bookmark: int = 0
    listener: tuple[str, int] = ("0.0.0.0", 0)
    interval: int = 0
    special_events: bool = False
    modes: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 5), 3))
    delays: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 5), 5))
    door_open: dict[int, bool] = field(default_factory=lambda: dict.fromkeys(range(1, 5), False))
    buttons: dict[int, bool] = field(default_factory=lambda: dict.fromkeys(range(1, 5), False))
    monotonic: Callable[[], float] = time.monotonic
    unlocked_until: dict[int, float] = field(
        default_factory=lambda: dict.fromkeys(range(1, 5), 0.0)
    )  # monotonic time each door's relay lets go
    unlocks: History[SimUnlock] = field(default_factory=History)
    offset: dt.timedelta = dt.timedelta(0)  # controller clock minus the host clock
    requests: Counter[int] = field(default_factory=Counter)

    def now(self) -> dt.datetime:
        return (self.clock() + self.offset).replace(microsecond=0, tzinfo=None)

    # ------------------------------------------------------------- events

    def record(
        self, type_: int, reason: int, *, door: int = 0, card: int = 0, granted: bool = False
    ) -> SimEvent:
        """Store a new event with the next index, dropping the oldest chunk when full."""
        self.last_index += 1
        event = SimEvent(self.last_index, type_, granted, door, 1, card, self.now(), reason)
        if len(self.events) >= self.event_capacity:
            del self.events[: max(1, self.drop_chunk)]
        self.events.append(event)
        return event

    def event_at(self, index: int) -> SimEvent | bool | None:
        """The event ``index``; None past the newest; False when overwritten."""
        if not self.events or index > self.last_index:
            return None
        if index == 0:
            return self.events[0]
        if index == 0xFFFFFFFF:
            return self.events[-1]
        first = self.events[0].index
        if index < first:
            return False
        return self.events[index - first]

    def swipe(self, card: int, door: int) -> SimEvent:
        reason = self._decide(card, door)
        granted = reason == REASON_OK
        if granted:
            self._unlock(door)
        # The reference simulator reports a granted swipe as type 2, a denied one as 1.
        return self.record(
            TYPE_DOOR if granted else TYPE_SWIPE, reason, door=door, card=card, granted=granted
        )

    def _decide(self, number: int, door: int) -> int:
        card = self.cards.get(number)
        if card is None:
            return REASON_DENIED
        if self.modes[door] == MODE_NORMALLY_CLOSED:
            return REASON_NORMALLY_CLOSED
        now = self.now()
        if not card.start <= now.date() <= card.end:
            return REASON_DENIED
        access = card.doors[door - 1]
        if access == 0:
            return REASON_NO_PRIVILEGE
        if access == 1 or self._profile_allows(access, now, set()):
            return REASON_OK
        return REASON_PROFILE

    def _profile_allows(self, profile_id: int, now: dt.datetime, seen: set[int]) -> bool:
        profile = self.profiles.get(profile_id)
        if profile is None or profile_id in seen:
            return False
        seen.add(profile_id)
        if profile.start <= now.date() <= profile.end and profile.weekdays[now.weekday()]:
            t = now.time()
            for start, end in profile.segments:
                if start < end and start <= t <= end:
                    return True
        return profile.linked != 0 and self._profile_allows(profile.linked, now, seen)

    def _unlock(self, door: int) -> None:
        # The delay is read now: the relay runs for it whatever 0x80 sets next.
        now, seconds = self.monotonic(), self.delays[door]
        self.unlocked_until[door] = now + seconds
        self.unlocks.append(SimUnlock(door, seconds, now))

    @property
    def relays(self) -> int:
        """The relay bits now (bit 0 = door 1): those still inside their unlock delay."""
        now = self.monotonic()
        return sum(1 << (d - 1) for d, until in self.unlocked_until.items() if now < until)

    def contact(self, door: int, *, is_open: bool) -> SimEvent | None:
        self.door_open[door] = is_open
        if is_open:
            self.unlocked_until[door] = 0.0  # the lock lets go once the door moved
        if not self.special_events:
            return None
        reason = REASON_OPENED if is_open else REASON_CLOSED
        return self.record(TYPE_DOOR, reason, door=door, card=8 if is_open else 9, granted=True)

    def button(self, door: int) -> SimEvent | None:
        self._unlock(door)
        if not self.special_events:
            return None
        return self.record(TYPE_DOOR, REASON_BUTTON, door=door, card=1, granted=True)

    def reset(self) -> SimEvent:
        """A factory reset: cards, profiles and the listener go; the event log stays."""
        self.cards.clear()
        self.slots.clear()
        self.profiles.clear()
        self.bookmark = 0
        self.special_events = False
        return self.record(TYPE_ALARM, REASON_RESET)

    # ----------------------------------------------------------- requests

    def handle(self, frame: bytes) -> bytes | None:
        """The reply to one request frame, or None for silence (as the firmware)."""
        if len(frame) != FRAME_BYTES or frame[0] != SOM:
            return None
        code = frame[1]
        serial = decode.unpack_uint32(frame, 4)
        if serial != self.serial and not (code == 0x94 and serial == 0):
            return None
        handler = _HANDLERS.get(code)
        if handler is None:
            return None
        self.requests[code] += 1
        body = handler(self, frame)
        if body is None:
            return None
        reply = bytearray(FRAME_BYTES)
        reply[0], reply[1] = SOM, code
        encode.pack_uint32(self.serial, reply, 4)
        reply[8 : 8 + len(body)] = body
        return bytes(reply)

    def status_frame(self, event: SimEvent | None, code: int = 0x20) -> bytes:
        """A get-status reply / pushed event (the same layout)."""
        out = bytearray(FRAME_BYTES)
        out[0], out[1] = SOM, code
        encode.pack_uint32(self.serial, out, 4)
        if event is not None:
            _pack_event(event, out)
        for door in range(1, 5):
            encode.pack_bool(self.door_open[door], out, 27 + door)
            encode.pack_bool(self.buttons[door], out, 31 + door)
        now = self.now()
        out[37:40] = bytes.fromhex(f"{now:%H%M%S}")
        out[49] = self.relays
        out[51:54] = bytes.fromhex(f"{now:%y%m%d}")
        return bytes(out)

    def newest(self) -> SimEvent | None:
        return self.events[-1] if self.events else None


def _pack_event(event: SimEvent, out: bytearray) -> None:
    encode.pack_uint32(event.index, out, 8)
    out[12] = event.type
    encode.pack_bool(event.granted, out, 13)
    out[14] = event.door
    out[15] = event.direction
    encode.pack_uint32(event.card, out, 16)
    encode.pack_datetime(event.timestamp, out, 20)
    out[27] = event.reason


def _u8(frame: bytes, offset: int) -> int:
    return frame[offset]


def _u32(frame: bytes, offset: int) -> int:
    value: int = decode.unpack_uint32(frame, offset)
    return value


def _flag(ok: bool) -> bytes:
    return b"\x01" if ok else b"\x00"


def _get_device(s: ControllerState, _f: bytes) -> bytes:
    out = bytearray(24)
    out[0:4] = ipaddress.IPv4Address(s.address).packed
    out[4:8] = ipaddress.IPv4Address("255.0.0.0").packed
    out[12:18] = bytes.fromhex("001223344556")
    out[18:20] = b"\x08\x92"
    out[20:24] = bytes.fromhex("20181105")
    return bytes(out)


def _get_status(s: ControllerState, _f: bytes) -> bytes:
    return s.status_frame(s.newest())[8:]


def _set_time(s: ControllerState, f: bytes) -> bytes | None:
    when = decode.unpack_datetime(f, 8)
    if when is None:
        return None
    s.offset = when - s.clock().replace(tzinfo=None)
    return _get_time(s, f)


def _get_time(s: ControllerState, _f: bytes) -> bytes:
    return bytes.fromhex(f"{s.now():%Y%m%d%H%M%S}")


def _open_door(s: ControllerState, f: bytes) -> bytes | None:
    door = _u8(f, 8)
    if not 1 <= door <= 4:
        return None
    s._unlock(door)
    s.record(TYPE_DOOR, REASON_REMOTE_OPEN, door=door, card=REMOTE_OPEN_CARD, granted=True)
    return _flag(True)


def _card_body(card: SimCard | None, number: int | None = None) -> bytes:
    out = bytearray(FRAME_BYTES)
    if card is None:
        encode.pack_uint32(number or 0, out, 8)
        return bytes(out[8:28])
    encode.pack_uint32(card.number, out, 8)
    encode.pack_date(card.start, out, 12)
    encode.pack_date(card.end, out, 16)
    out[20:24] = bytes(card.doors)
    encode.pack_pin(card.pin, out, 24)
    return bytes(out[8:28])


def _put_card(s: ControllerState, f: bytes) -> bytes:
    number = _u32(f, 8)
    start, end = decode.unpack_date(f, 12), decode.unpack_date(f, 16)
    if number in (0, 0xFFFFFFFF, 0x00FFFFFF) or start is None or end is None:
        return _flag(False)
    pin = decode.unpack_pin(f, 24)
    card = SimCard(number, start, end, (f[20], f[21], f[22], f[23]), pin if pin <= 999999 else 0)
    if number not in s.cards:
        s.slots.append(number)
    s.cards[number] = card
    return _flag(True)


def _delete_card(s: ControllerState, f: bytes) -> bytes:
    number = _u32(f, 8)
    if s.cards.pop(number, None) is None:
        return _flag(False)
    s.slots[s.slots.index(number)] = 0xFFFFFFFF
    return _flag(True)


def _delete_all(s: ControllerState, f: bytes) -> bytes:
    if _u32(f, 8) != MAGIC:
        return _flag(False)
    s.cards.clear()
    s.slots.clear()
    return _flag(True)


def _get_cards(s: ControllerState, _f: bytes) -> bytes:
    return len(s.cards).to_bytes(4, "little")


def _get_card(s: ControllerState, f: bytes) -> bytes:
    return _card_body(s.cards.get(_u32(f, 8)))


def _get_card_by_index(s: ControllerState, f: bytes) -> bytes | None:
    index = _u32(f, 8)
    if index == 0:
        return None
    if index > len(s.slots):
        return _card_body(None)
    number = s.slots[index - 1]
    if number == 0xFFFFFFFF:
        return _card_body(None, number)
    return _card_body(s.cards[number])


def _set_door(s: ControllerState, f: bytes) -> bytes | None:
    door, mode, delay = f[8], f[9], f[10]
    if not 1 <= door <= 4:
        return None
    if 1 <= mode <= 3:
        s.modes[door] = mode
    s.delays[door] = delay
    return bytes((door, s.modes[door], s.delays[door]))


def _get_door(s: ControllerState, f: bytes) -> bytes | None:
    door = f[8]
    if not 1 <= door <= 4:
        return None
    return bytes((door, s.modes[door], s.delays[door]))


def _set_profile(s: ControllerState, f: bytes) -> bytes:
    profile_id = f[8]
    start, end = decode.unpack_date(f, 9), decode.unpack_date(f, 13)
    if not 2 <= profile_id <= 254 or start is None or end is None:
        return _flag(False)
    segments = []
    for offset in (24, 28, 32):
        a, b = decode.unpack_hhmm(f, offset), decode.unpack_hhmm(f, offset + 2)
        if a is not None and b is not None:
            segments.append((a, b))
    weekdays = tuple(f[17 + i] != 0 for i in range(7))
    s.profiles[profile_id] = SimProfile(profile_id, start, end, weekdays, tuple(segments), f[36])
    return _flag(True)


def _get_profile(s: ControllerState, f: bytes) -> bytes:
    profile = s.profiles.get(f[8])
    out = bytearray(FRAME_BYTES)
    if profile is None:
        return bytes(out[8:37])
    out[8] = profile.profile_id
    encode.pack_date(profile.start, out, 9)
    encode.pack_date(profile.end, out, 13)
    for i, on in enumerate(profile.weekdays):
        out[17 + i] = int(on)
    for i, (a, b) in enumerate(profile.segments):
        encode.pack_HHmm(a, out, 24 + 4 * i)
        encode.pack_HHmm(b, out, 26 + 4 * i)
    out[36] = profile.linked
    return bytes(out[8:37])


def _clear_profiles(s: ControllerState, f: bytes) -> bytes:
    if _u32(f, 8) != MAGIC:
        return _flag(False)
    s.profiles.clear()
    return _flag(True)


def _special_events(s: ControllerState, f: bytes) -> bytes:
    s.special_events = f[8] != 0
    return _flag(True)


def _set_listener(s: ControllerState, f: bytes) -> bytes:
    s.listener = (str(decode.unpack_ipv4(f, 8)), decode.unpack_uint16(f, 12))
    s.interval = f[14]
    return _flag(True)


def _get_listener(s: ControllerState, _f: bytes) -> bytes:
    out = bytearray(FRAME_BYTES)
    out[8:12] = ipaddress.IPv4Address(s.listener[0]).packed
    encode.pack_uint16(s.listener[1], out, 12)
    out[14] = s.interval
    return bytes(out[8:15])


def _get_event(s: ControllerState, f: bytes) -> bytes:
    found = s.event_at(_u32(f, 8))
    out = bytearray(FRAME_BYTES)
    if found is False:
        out[12] = 0xFF  # overwritten; the index comes back as 0 (as the reference simulator)
    elif isinstance(found, SimEvent):
        _pack_event(found, out)
    return bytes(out[8:28])


def _set_event_index(s: ControllerState, f: bytes) -> bytes | None:
    if _u32(f, 12) != MAGIC:
        return None
    index = _u32(f, 8)
    if index > s.last_index or index == s.bookmark:
        return _flag(index == 0)
    s.bookmark = index
    return _flag(True)


def _get_event_index(s: ControllerState, _f: bytes) -> bytes:
    return s.bookmark.to_bytes(4, "little")


_HANDLERS: dict[int, Callable[[ControllerState, bytes], bytes | None]] = {
    0x94: _get_device,
    0x20: _get_status,
    0x30: _set_time,
    0x32: _get_time,
    0x40: _open_door,
    0x50: _put_card,
    0x52: _delete_card,
    0x54: _delete_all,
    0x58: _get_cards,
    0x5A: _get_card,
    0x5C: _get_card_by_index,
    0x80: _set_door,
    0x82: _get_door,
    0x88: _set_profile,
    0x8A: _clear_profiles,
    0x8E: _special_events,
    0x90: _set_listener,
    0x92: _get_listener,
    0x98: _get_profile,
    0xB0: _get_event,
    0xB2: _set_event_index,
    0xB4: _get_event_index,
}


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, sim: UhppoteSimulator) -> None:
        self._sim = sim

    def datagram_received(self, data: bytes, addr: tuple[str | None, int]) -> None:
        self._sim.on_request(data, addr)


class UhppoteSimulator:
    """The controller on a loopback UDP port; events are pushed to its listener."""

    def __init__(
        self,
        serial: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        event_capacity: int = DEFAULT_EVENT_CAPACITY,
        drop_chunk: int = DEFAULT_DROP_CHUNK,
        ambient: bool = False,
        doors: tuple[int, ...] = (1, 2),
        ambient_cards: tuple[int, ...] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.state = ControllerState(
            serial, address=host, event_capacity=event_capacity, drop_chunk=drop_chunk
        )
        self._host = host
        self._port = port
        self._transport: asyncio.DatagramTransport | None = None
        self._push: asyncio.DatagramTransport | None = None
        self.answering = True
        self.drop_pushes = False
        self.pushes_sent = 0
        self.pushes_dropped = 0
        self.frames_received = 0
        self._unanswered: Counter[int] = Counter()
        self._spared: Counter[int] = Counter()
        self._doors = doors
        self._ambient_cards = ambient_cards
        self._rng = rng or random.Random()
        self.ambient = Ambient(
            f"sim uhppote {serial} ambient", self._residents, enabled=ambient, rng=self._rng
        )
        self._changed = asyncio.Event()

    @property
    def serial(self) -> int:
        return self.state.serial

    async def start(self) -> SimEndpoint:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self._host, self._port)
        )
        self._transport = transport
        push, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(self._host, 0)
        )
        self._push = push
        self._port = transport.get_extra_info("sockname")[1]
        self.ambient.start()
        return SimEndpoint(host=self._host, tcp_port=self._port)

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    async def stop(self) -> None:
        await self.ambient.stop()
        for transport in (self._transport, self._push):
            if transport is not None:
                transport.close()
        self._transport = self._push = None

    def on_request(self, data: bytes, addr: tuple[str | None, int]) -> None:
        self.frames_received += 1
        if not self.answering or self._transport is None:
            return
        if len(data) > 1 and self._spared[data[1]] > 0:
            self._spared[data[1]] -= 1
        elif len(data) > 1 and self._unanswered[data[1]] > 0:
            self._unanswered[data[1]] -= 1  # lost on the way: not acted on, not answered
            return
        before = self.state.last_index
        reply = self.state.handle(data)
        if reply is not None:
            self._transport.sendto(reply, addr)
        if self.state.last_index != before:
            self._maybe_pushed(self.state.newest())
        self._notify()

    # ------------------------------------------------------------- script

    def swipe(self, card: int, door: int) -> SimEvent:
        return self._pushed(self.state.swipe(card, door))

    def open_door(self, door: int) -> SimEvent | None:
        return self._maybe_pushed(self.state.contact(door, is_open=True))

    def close_door(self, door: int) -> SimEvent | None:
        return self._maybe_pushed(self.state.contact(door, is_open=False))

    def press_button(self, door: int) -> SimEvent | None:
        return self._maybe_pushed(self.state.button(door))

    def reset(self) -> SimEvent:
        return self._pushed(self.state.reset())

    def add_events(self, count: int, *, card: int = 10058400, door: int = 1) -> None:
        """Record ``count`` swipes without pushing them (a gateway that was away)."""
        for _ in range(count):
            self.state.swipe(card, door)

    def unplug(self) -> None:
        self.answering = False

    def replug(self) -> None:
        self.answering = True

    def stop_answering(self) -> None:
        self.answering = False

    def resume_answering(self) -> None:
        self.answering = True

    def lose_requests(self, code: int, count: int = 1, *, after: int = 0) -> None:
        """After ``after`` more requests with function ``code``, lose the next ``count``."""
        self._spared[code] = after
        self._unanswered[code] = count

    def set_drop_pushes(self, drop: bool) -> None:
        self.drop_pushes = drop

    def send_garbage(self) -> None:
        """A frame no decoder accepts, to the listener (bad start byte)."""
        host, port = self.state.listener
        if port and self._push is not None:
            self._push.sendto(b"\x42" * FRAME_BYTES, (host, port))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    def _maybe_pushed(self, event: SimEvent | None) -> SimEvent | None:
        if event is None:
            self._notify()
            return None
        return self._pushed(event)

    def _pushed(self, event: SimEvent) -> SimEvent:
        self._notify()
        host, port = self.state.listener
        if port == 0 or self._push is None or not self.answering:
            return event
        if self.drop_pushes:
            self.pushes_dropped += 1
            return event
        self._push.sendto(self.state.status_frame(event), (host, port))
        self.pushes_sent += 1
        return event

    async def _residents(self) -> None:
        while True:
            await self.ambient.pause(AMBIENT_PERIOD_S)
            door = self._rng.choice(self._doors)
            # Residents hold cards the gateway wrote; now and then a stranger tries.
            cards = self._ambient_cards or tuple(self.state.cards) or (AMBIENT_STRANGER,)
            stranger = self._rng.random() < AMBIENT_STRANGER_SHARE
            event = self.swipe(AMBIENT_STRANGER if stranger else self._rng.choice(cards), door)
            if event.granted:
                await asyncio.sleep(1.0)
                self.open_door(door)
                await asyncio.sleep(self._rng.uniform(2.0, 6.0))
                self.close_door(door)


def make_simulator(
    config: UhppoteSimConfig, workdir: Path, *, ambient: bool = True
) -> UhppoteSimulator:
    """The simulator for a ``simulate: true`` controller (``workdir`` is unused: UDP only)."""
    del workdir
    return UhppoteSimulator(config.serial, ambient=ambient, doors=tuple(sorted(config.doors)))
