"""BLE receiver report lines, ``ble-gprp-v1`` (PROTOCOLS.md, "Elder-care wearables").

An Ingics iGS-style receiver on USB serial prints one ASCII line per
advertisement::

    $GPRP,<tag MAC 12 hex>,<receiver MAC 12 hex>,<rssi>,<advertisement hex>[,<unix time>]\\r\\n

``GprpDecoder.feed`` splits the byte stream into lines (bounded length) and
returns ``GprpReport`` for each good ``$GPRP`` line, ``Ignored`` for other
``$`` report types (``$RSPR`` scan responses and the like: not errors) and
``Discarded`` for anything malformed. ``$`` never occurs inside a valid line, so
it doubles as a start-of-frame marker: bytes before the last ``$`` of a line (a
line cut short by noise, garbage after a reconnect) are discarded and the rest
is parsed.

Payload decoders, chosen by the advertisement's content:

- Ingics iBS01 / iBS01G: manufacturer data ``12 FF 59 00 80 BC``, battery uint16
  LE x0.01 V, event byte (bit0 button, bit1 moving, bit3 fall), subtype at byte
  18 of the advertisement (0x03 iBS01, 0x06 iBS01G).
- BTHome v2 (https://bthome.io/format/): service data ``16 D2 FC``, device-info
  byte (0x40, or 0x44 when trigger-based), then objects in id order; 0x00
  packet id, 0x01 battery %, 0x3A button event.

Sans-I/O: no asyncio, no clock, stdlib only.

Longer than 400 lines because it holds the line framing and both payload formats
(Ingics, BTHome), each with the encoder the simulator uses: one protocol, decoded and
encoded in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from drivers.codecs.errors import ProtocolError

__all__ = [
    "BTHOME_UUID",
    "INGICS_COMPANY_ID",
    "MAX_LINE_LEN",
    "BtHomeButton",
    "BtHomePayload",
    "Discarded",
    "GprpDecoder",
    "GprpError",
    "GprpReport",
    "Ignored",
    "IngicsPayload",
    "ad_structures",
    "decode_bthome",
    "decode_ingics",
    "decode_payload",
    "encode_bthome",
    "encode_ingics",
    "parse_line",
]

MAX_LINE_LEN = 1024
"""Longest line accepted, in bytes. A legacy advertisement is at most 31 bytes
(62 hex digits) and the whole line about 110 bytes; the margin allows extended
advertisements (up to 255 bytes)."""

INGICS_COMPANY_ID = 0x0059
BTHOME_UUID = 0xFCD2

_AD_FLAGS = bytes.fromhex("020106")
_INGICS_HEADER = bytes.fromhex("590080BC")
_INGICS_AD_LEN = 0x12
_BTHOME_VERSION_2 = 0x40
_BTHOME_ENCRYPTED = 0x01
_BTHOME_TRIGGER = 0x04

_MAC_RE = re.compile(r"[0-9A-Fa-f]{12}")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_RSSI_RE = re.compile(r"-?[0-9]{1,3}")
_TIME_RE = re.compile(r"[0-9]{1,12}")
_REPORT_TYPE_RE = re.compile(r"\$[A-Z0-9]{2,8}")


class GprpError(ProtocolError):
    """A line that is not a valid ``$GPRP`` report, or a payload that does not decode."""


@dataclass(frozen=True, slots=True)
class GprpReport:
    """One advertisement as the receiver printed it. MACs are upper-case hex."""

    tag_mac: str
    receiver_mac: str
    rssi: int
    adv: bytes
    unix_time: int | None = None

    def __post_init__(self) -> None:
        for name in ("tag_mac", "receiver_mac"):
            value = getattr(self, name)
            if not _MAC_RE.fullmatch(value) or value != value.upper():
                raise GprpError(f"{name} must be 12 upper-case hex digits")
        if not -128 <= self.rssi <= 127:
            raise GprpError(f"rssi out of range: {self.rssi}")
        if len(self.adv) > 255:
            raise GprpError("advertisement longer than 255 bytes")
        if self.unix_time is not None and not 0 <= self.unix_time < 10**12:
            raise GprpError(f"unix time out of range: {self.unix_time}")

    def encode(self) -> bytes:
        """The line the receiver prints, with ``\\r\\n``."""
        line = f"$GPRP,{self.tag_mac},{self.receiver_mac},{self.rssi},{self.adv.hex().upper()}"
        if self.unix_time is not None:
            line += f",{self.unix_time}"
        return (line + "\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed report of another type (``$RSPR``...), ignored on purpose."""

    report_type: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """``count`` bytes skipped (a malformed or over-long line), and why."""

    count: int
    reason: str


def parse_line(line: bytes) -> GprpReport | Ignored:
    """Parse one line (with or without its ``\\r\\n``).

    Raises:
        GprpError: the line is not a report, or a ``$GPRP`` field is malformed.
    """
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise GprpError("not ASCII", line) from exc
    fields = text.split(",")
    report_type = fields[0]
    if report_type != "$GPRP":
        if _REPORT_TYPE_RE.fullmatch(report_type):
            return Ignored(report_type[1:])
        raise GprpError("not a report line", line)
    if len(fields) not in (5, 6):
        raise GprpError(f"$GPRP with {len(fields)} fields", line)
    tag_mac, receiver_mac, rssi, adv = fields[1:5]
    if not _MAC_RE.fullmatch(tag_mac) or not _MAC_RE.fullmatch(receiver_mac):
        raise GprpError("bad MAC", line)
    if not _RSSI_RE.fullmatch(rssi) or not -128 <= int(rssi) <= 127:
        raise GprpError("bad rssi", line)
    if adv and not _HEX_RE.fullmatch(adv):
        raise GprpError("bad advertisement hex", line)
    if len(adv) > 510:
        raise GprpError("advertisement too long", line)
    unix_time = None
    if len(fields) == 6:
        if not _TIME_RE.fullmatch(fields[5]):
            raise GprpError("bad unix time", line)
        unix_time = int(fields[5])
    return GprpReport(
        tag_mac=tag_mac.upper(),
        receiver_mac=receiver_mac.upper(),
        rssi=int(rssi),
        adv=bytes.fromhex(adv),
        unix_time=unix_time,
    )


class GprpDecoder:
    """Line splitter and parser for one connection; ``feed`` never raises.

    Make a new decoder per connection. ``max_line`` bounds the buffer: a line
    that grows past it is discarded up to its end.
    """

    __slots__ = ("_buf", "_max_line", "_skipping")

    def __init__(self, *, max_line: int = MAX_LINE_LEN) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        self._skipping = 0  # bytes of an over-long line dropped so far

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete line (at most ``max_line``)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[GprpReport | Ignored | Discarded]:
        """Add bytes; return an event per complete line, in order."""
        out: list[GprpReport | Ignored | Discarded] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                out.append(Discarded(self._skipping + end + 1 - start, "line_too_long"))
                self._skipping = 0
            elif end - start > self._max_line:
                out.append(Discarded(end + 1 - start, "line_too_long"))
            else:
                self._line(bytes(buf[start:end]), out)
            start = end + 1
        del buf[:start]
        if len(buf) > self._max_line:
            self._skipping += len(buf)
            buf.clear()
        return out

    def _line(self, line: bytes, out: list[GprpReport | Ignored | Discarded]) -> None:
        total = len(line) + 1  # with its terminator
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return  # blank lines between reports are harmless
        start = line.rfind(b"$")
        if start < 0:
            out.append(Discarded(total, "no_report_start"))
            return
        if start > 0:
            # A report cut short, or noise before this one: keep the last report.
            out.append(Discarded(start, "garbage"))
            total -= start
            line = line[start:]
        try:
            out.append(parse_line(line))
        except GprpError as exc:
            out.append(Discarded(total, exc.reason))


# --- advertisement payloads ---------------------------------------------------


def ad_structures(adv: bytes) -> list[tuple[int, bytes]]:
    """Split an advertisement into ``(AD type, data)`` pairs.

    Raises:
        GprpError: a length byte runs past the end.
    """
    out = []
    pos = 0
    while pos < len(adv):
        length = adv[pos]
        if length == 0:
            break  # zero padding ends the significant part
        end = pos + 1 + length
        if end > len(adv):
            raise GprpError("AD structure runs past the end", adv)
        out.append((adv[pos + 1], adv[pos + 2 : end]))
        pos = end
    return out


@dataclass(frozen=True, slots=True)
class IngicsPayload:
    """Ingics iBS01-family beacon: battery and event bits."""

    battery_v: float
    button: bool
    moving: bool
    fall: bool
    subtype: int
    events: int = 0

    @property
    def model(self) -> str:
        return {0x03: "iBS01", 0x06: "iBS01G"}.get(self.subtype, f"iBS01-0x{self.subtype:02X}")


class BtHomeButton(IntEnum):
    """BTHome button event codes (object 0x3A)."""

    NONE = 0x00
    PRESS = 0x01
    DOUBLE_PRESS = 0x02
    TRIPLE_PRESS = 0x03
    LONG_PRESS = 0x04
    LONG_DOUBLE_PRESS = 0x05
    LONG_TRIPLE_PRESS = 0x06
    HOLD_PRESS = 0x80


@dataclass(frozen=True, slots=True)
class BtHomePayload:
    """BTHome v2 objects this gateway uses (the rest are skipped)."""

    packet_id: int | None = None
    battery_pct: int | None = None
    button: int | None = None
    trigger_based: bool = False
    voltage_v: float | None = None


# BTHome v2 object ids -> data length, for skipping objects we do not use.
# From the BTHome format table; an id not listed ends decoding (its length is
# unknown), keeping what was decoded before it.
_BTHOME_SIZES = {
    0x00: 1,  # packet id
    0x01: 1,  # battery %
    0x02: 2,  # temperature 0.01
    0x03: 2,  # humidity 0.01
    0x04: 3,  # pressure
    0x05: 3,  # illuminance
    0x06: 2,  # mass kg
    0x07: 2,  # mass lb
    0x08: 2,  # dewpoint
    0x09: 1,  # count
    0x0A: 3,  # energy
    0x0B: 3,  # power
    0x0C: 2,  # voltage 0.001
    0x0D: 2,  # pm2.5
    0x0E: 2,  # pm10
    0x0F: 1,  # generic boolean
    0x10: 1,  # power on/off
    0x11: 1,  # opening
    0x12: 2,  # co2
    0x13: 2,  # tvoc
    0x14: 2,  # moisture 0.01
    0x15: 1,  # battery low
    0x16: 1,  # battery charging
    0x1A: 1,  # door
    0x20: 1,  # moisture (binary)
    0x21: 1,  # motion
    0x22: 1,  # moving
    0x2D: 1,  # window
    0x2E: 1,  # humidity %
    0x2F: 1,  # moisture %
    0x3A: 1,  # button event
    0x3C: 2,  # dimmer event
    0x3D: 2,  # count uint16
    0x3E: 4,  # count uint32
    0x3F: 2,  # rotation
    0x40: 2,  # distance mm
    0x41: 2,  # distance m
    0x43: 2,  # current
    0x44: 2,  # speed
    0x45: 2,  # temperature 0.1
    0x46: 1,  # uv index
    0x4A: 2,  # voltage 0.1
}


def decode_ingics(adv: bytes) -> IngicsPayload | None:
    """Decode an Ingics iBS01-family advertisement; None if it is not one.

    Raises:
        GprpError: the advertisement's AD structures are broken.
    """
    for ad_type, data in ad_structures(adv):
        if ad_type != 0xFF or not data.startswith(_INGICS_HEADER):
            continue
        if len(data) + 1 != _INGICS_AD_LEN:
            raise GprpError("Ingics manufacturer data of the wrong length", adv)
        battery = int.from_bytes(data[4:6], "little")
        events = data[6]
        return IngicsPayload(
            battery_v=battery / 100,
            button=bool(events & 0x01),
            moving=bool(events & 0x02),
            fall=bool(events & 0x08),
            subtype=data[13],
            events=events,
        )
    return None


def decode_bthome(adv: bytes) -> BtHomePayload | None:
    """Decode a BTHome v2 advertisement; None if it is not one (or is encrypted).

    Raises:
        GprpError: the advertisement's AD structures or objects are broken.
    """
    for ad_type, data in ad_structures(adv):
        if ad_type != 0x16 or len(data) < 3 or int.from_bytes(data[:2], "little") != BTHOME_UUID:
            continue
        info = data[2]
        if info & 0xE0 != _BTHOME_VERSION_2:
            raise GprpError(f"BTHome version {info >> 5} not supported", adv)
        if info & _BTHOME_ENCRYPTED:
            return None  # no keys on the gateway: an encrypted band is not decodable
        values: dict[int, int] = {}
        pos = 3
        while pos < len(data):
            obj = data[pos]
            size = _BTHOME_SIZES.get(obj)
            if size is None:
                break
            if pos + 1 + size > len(data):
                raise GprpError(f"BTHome object 0x{obj:02X} truncated", adv)
            values.setdefault(obj, int.from_bytes(data[pos + 1 : pos + 1 + size], "little"))
            pos += 1 + size
        voltage = values.get(0x0C)
        return BtHomePayload(
            packet_id=values.get(0x00),
            battery_pct=values.get(0x01),
            button=values.get(0x3A),
            trigger_based=bool(info & _BTHOME_TRIGGER),
            voltage_v=None if voltage is None else voltage / 1000,
        )
    return None


def decode_payload(adv: bytes) -> IngicsPayload | BtHomePayload | None:
    """Choose the decoder by content; None for an advertisement of another kind.

    Raises:
        GprpError: it looks like one of ours but does not decode.
    """
    return decode_ingics(adv) or decode_bthome(adv)


def encode_ingics(
    *,
    battery_v: float,
    button: bool = False,
    moving: bool = False,
    fall: bool = False,
    subtype: int = 0x06,
) -> bytes:
    """An iBS01-family advertisement (flags + manufacturer data), as the band sends it."""
    battery = round(battery_v * 100)
    if not 0 <= battery <= 0xFFFF:
        raise GprpError(f"battery out of range: {battery_v}")
    events = (0x01 if button else 0) | (0x02 if moving else 0) | (0x08 if fall else 0)
    data = (
        _INGICS_HEADER
        + battery.to_bytes(2, "little")
        + bytes((events,))
        + bytes.fromhex("FFFFFFFF0000")
        + bytes((subtype,))
        + bytes(3)
    )
    return _AD_FLAGS + bytes((len(data) + 1, 0xFF)) + data


def encode_bthome(
    *,
    packet_id: int | None = None,
    battery_pct: int | None = None,
    button: int | None = None,
    trigger_based: bool = False,
) -> bytes:
    """A BTHome v2 advertisement (flags + service data), objects in id order."""
    body = bytearray(BTHOME_UUID.to_bytes(2, "little"))
    body.append(_BTHOME_VERSION_2 | (_BTHOME_TRIGGER if trigger_based else 0))
    for obj, value in ((0x00, packet_id), (0x01, battery_pct), (0x3A, button)):
        if value is not None:
            if not 0 <= value <= 0xFF:
                raise GprpError(f"BTHome object 0x{obj:02X} out of range: {value}")
            body += bytes((obj, value))
    return _AD_FLAGS + bytes((len(body) + 1, 0x16)) + bytes(body)
