"""Chafon UHF RFID reader protocol, ``chafon-uhf-v1`` (PROTOCOLS.md, "UHF RFID reader").

The Chafon UHFReader18 / CF-RU5102 family (widely cloned). Frames::

    host -> reader   Len Adr Cmd Data... CRClo CRChi           Len = len(Data) + 4
    reader -> host   Len Adr reCmd Status Data... CRClo CRChi  Len = len(Data) + 5

``Len`` counts the bytes after itself, so a frame is ``Len + 1`` bytes and at
most 256. The CRC is CRC-16/MCRF4XX over ``Len..Data``, low byte first; a whole
valid frame has residue 0x0000.

Sans-I/O: no asyncio, no clock, stdlib only. ``parse_frame`` parses exactly
one frame or raises ``ChafonError``. ``ChafonDecoder.feed`` takes any bytes and
returns frames and ``Discarded`` events, never raising. It hunts for frames the
way pymodbus' RTU framer does: at each offset it reads the length, checks the
header is plausible, waits until the candidate is complete and confirms it by
CRC; on a mismatch it slides one byte and tries again. Recovered cases:

- garbage before, between or after frames (line noise, a reader booting);
- a corrupted byte (bad CRC): the frame is dropped, the next good one is found;
- a truncated frame followed by a good one: the bytes of the truncated frame are
  dropped once the CRC fails, or at once when the caller signals a line gap
  with ``idle()`` (bytes inside one frame are less than 15 ms apart).

The decoder never holds more than one incomplete frame (255 bytes).

Longer than 400 lines because each command and reply of the protocol is its own frame
class with ``encode`` and parsing (the simulator uses the same classes), beside the
resynchronising stream decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from drivers.codecs.crc import crc16_mcrf4xx
from drivers.codecs.errors import ProtocolError

__all__ = [
    "BROADCAST_ADDRESS",
    "MAX_FRAME_LEN",
    "ChafonDecoder",
    "ChafonError",
    "Cmd",
    "Command",
    "CommandFrame",
    "Direction",
    "Discarded",
    "Frame",
    "GetReaderInfo",
    "GetWorkMode",
    "Inventory",
    "InventoryReply",
    "InventorySingle",
    "InventoryStatus",
    "ReaderInfoReply",
    "ReplyFrame",
    "SetWorkMode",
    "Status",
    "StatusReply",
    "TagPushed",
    "WorkMode",
    "WorkModeReply",
    "parse_frame",
]

BROADCAST_ADDRESS = 0xFF
MAX_FRAME_LEN = 256
"""Len is one byte and counts the bytes after itself."""

_MIN_LEN_TO_READER = 4
_MIN_LEN_TO_HOST = 5
_WORK_MODE_LEN = 6
_MAX_SETTER_REPLY_LEN = _MIN_LEN_TO_HOST + 32
"""Replies other than inventories and pushes are short (8 data bytes at most in
PROTOCOLS.md's table); allow 32 so model variants still decode."""
_READER_INFO_LEN = 8


class ChafonError(ProtocolError):
    """Bytes that are not one valid Chafon frame."""


class Direction(Enum):
    """Which side sent the bytes: the decoders differ (replies carry a status byte)."""

    TO_READER = "to_reader"
    TO_HOST = "to_host"


class Cmd(IntEnum):
    """Command codes (PROTOCOLS.md, "Commands")."""

    UNKNOWN = 0x00
    """``reCmd`` of the reply to a command the reader does not know."""
    INVENTORY = 0x01
    INVENTORY_SINGLE = 0x0F
    GET_READER_INFO = 0x21
    SET_WORK_MODE = 0x35
    GET_WORK_MODE = 0x36
    TAG_PUSHED = 0xEE


class Status(IntEnum):
    """Reply status codes shared by every command."""

    OK = 0x00
    UNKNOWN_COMMAND = 0xFE


class InventoryStatus(IntEnum):
    """Status of an inventory reply (PROTOCOLS.md: 0x01, 0x02, 0x03, 0xFB)."""

    DONE = 0x01
    SCAN_OVERFLOW = 0x02
    MORE_FRAMES = 0x03
    NO_TAG = 0xFB


_INVENTORY_DATA_STATUSES = frozenset(
    {InventoryStatus.DONE, InventoryStatus.SCAN_OVERFLOW, InventoryStatus.MORE_FRAMES}
)


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ChafonError(f"{name} out of range: {value}")


def _frame(address: int, cmd: int, body: bytes) -> bytes:
    """Len Adr Cmd body CRC; ``body`` is Data (commands) or Status+Data (replies)."""
    length = len(body) + 4
    if length > 0xFF:
        raise ChafonError(f"frame too long: Len={length}")
    head = bytes((length, address, cmd)) + body
    crc = crc16_mcrf4xx(head)
    return head + bytes((crc & 0xFF, crc >> 8))


@dataclass(frozen=True, slots=True)
class WorkMode:
    """The six work-mode bytes of commands 0x35 / 0x36."""

    read_mode: int = 0
    mode_state: int = 0
    mem_inven: int = 0
    first_adr: int = 0
    word_num: int = 0
    tag_time: int = 0

    def __post_init__(self) -> None:
        for name in ("read_mode", "mode_state", "mem_inven", "first_adr", "word_num", "tag_time"):
            _check_byte(name, getattr(self, name))

    @classmethod
    def answer(cls) -> WorkMode:
        """Answer (polling) mode: all zeros (the golden "back to answer mode" frame)."""
        return cls()

    @classmethod
    def scan(cls, tag_time: int = 0) -> WorkMode:
        """Scan (push) mode, RS-485 output, EPC pushes at most once per ``tag_time`` s."""
        return cls(
            read_mode=1, mode_state=0x02, mem_inven=0x04, first_adr=0, word_num=1, tag_time=tag_time
        )

    @property
    def is_scan(self) -> bool:
        return self.read_mode == 1

    def to_bytes(self) -> bytes:
        return bytes(
            (
                self.read_mode,
                self.mode_state,
                self.mem_inven,
                self.first_adr,
                self.word_num,
                self.tag_time,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkMode:
        if len(data) != _WORK_MODE_LEN:
            raise ChafonError("work mode must be 6 bytes", data)
        return cls(*data)


# --- host -> reader ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inventory:
    """0x01: inventory of every tag in the field."""

    address: int = 0x00
    cmd: int = field(default=Cmd.INVENTORY, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, b"")


@dataclass(frozen=True, slots=True)
class InventorySingle:
    """0x0F: inventory of one tag."""

    address: int = 0x00
    cmd: int = field(default=Cmd.INVENTORY_SINGLE, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, b"")


@dataclass(frozen=True, slots=True)
class GetReaderInfo:
    """0x21: version, type, band, power and scan time."""

    address: int = 0x00
    cmd: int = field(default=Cmd.GET_READER_INFO, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, b"")


@dataclass(frozen=True, slots=True)
class SetWorkMode:
    """0x35: switch between answer mode and scan (push) mode."""

    mode: WorkMode
    address: int = 0x00
    cmd: int = field(default=Cmd.SET_WORK_MODE, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, self.mode.to_bytes())


@dataclass(frozen=True, slots=True)
class GetWorkMode:
    """0x36: read the work mode."""

    address: int = 0x00
    cmd: int = field(default=Cmd.GET_WORK_MODE, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, b"")


@dataclass(frozen=True, slots=True)
class Command:
    """Any other command (address, scan time, baud, power, beep...), or a known
    command code whose data has a shape the typed frames do not describe."""

    cmd: int
    data: bytes = b""
    address: int = 0x00

    def __post_init__(self) -> None:
        _check_byte("address", self.address)
        _check_byte("cmd", self.cmd)
        if len(self.data) + _MIN_LEN_TO_READER > 0xFF:
            raise ChafonError("command data too long", self.data)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, self.data)


# --- reader -> host ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryReply:
    """Reply to 0x01 (or 0x0F): status and the EPCs of this frame.

    ``status`` 0x03 means more frames of the same inventory follow; 0xFB (no
    tag) carries no data.
    """

    status: int
    epcs: tuple[bytes, ...] = ()
    address: int = 0x00
    cmd: int = Cmd.INVENTORY

    def __post_init__(self) -> None:
        _check_byte("address", self.address)
        _check_byte("status", self.status)
        if self.cmd not in (Cmd.INVENTORY, Cmd.INVENTORY_SINGLE):
            raise ChafonError(f"not an inventory command: 0x{self.cmd:02X}")
        if self.status not in _INVENTORY_DATA_STATUSES and self.epcs:
            raise ChafonError(f"status 0x{self.status:02X} carries no EPCs")
        if len(self.epcs) > 0xFF:
            raise ChafonError("too many EPCs")
        for epc in self.epcs:
            if not 0 < len(epc) <= 0xFF:
                raise ChafonError("EPC length out of range", epc)
        if self._data_len() + _MIN_LEN_TO_HOST > 0xFF:
            raise ChafonError("inventory reply too long")

    def _data_len(self) -> int:
        if self.status not in _INVENTORY_DATA_STATUSES:
            return 0
        return 1 + sum(1 + len(epc) for epc in self.epcs)

    @property
    def more_follow(self) -> bool:
        return self.status == InventoryStatus.MORE_FRAMES

    def encode(self) -> bytes:
        body = bytearray((self.status,))
        if self.status in _INVENTORY_DATA_STATUSES:
            body.append(len(self.epcs))
            for epc in self.epcs:
                body.append(len(epc))
                body += epc
        return _frame(self.address, self.cmd, bytes(body))


@dataclass(frozen=True, slots=True)
class ReaderInfoReply:
    """Reply to 0x21: ``Version(2) Type Tr_Type DMaxFre DMinFre Power ScanTime``."""

    version: tuple[int, int] = (0, 0)
    reader_type: int = 0
    tr_type: int = 0
    dmax_fre: int = 0
    dmin_fre: int = 0
    power: int = 0
    scan_time: int = 0
    address: int = 0x00
    status: int = Status.OK
    cmd: int = field(default=Cmd.GET_READER_INFO, init=False)

    def __post_init__(self) -> None:
        for name in (
            "reader_type",
            "tr_type",
            "dmax_fre",
            "dmin_fre",
            "power",
            "scan_time",
            "address",
            "status",
        ):
            _check_byte(name, getattr(self, name))
        if len(self.version) != 2:
            raise ChafonError("version is two bytes")
        _check_byte("version", self.version[0])
        _check_byte("version", self.version[1])

    def encode(self) -> bytes:
        data = bytes(
            (
                self.status,
                *self.version,
                self.reader_type,
                self.tr_type,
                self.dmax_fre,
                self.dmin_fre,
                self.power,
                self.scan_time,
            )
        )
        return _frame(self.address, self.cmd, data)


@dataclass(frozen=True, slots=True)
class WorkModeReply:
    """Reply to 0x35 or 0x36 carrying the six work-mode bytes."""

    mode: WorkMode
    cmd: int = Cmd.GET_WORK_MODE
    address: int = 0x00
    status: int = Status.OK

    def __post_init__(self) -> None:
        _check_byte("address", self.address)
        _check_byte("status", self.status)
        if self.cmd not in (Cmd.SET_WORK_MODE, Cmd.GET_WORK_MODE):
            raise ChafonError(f"not a work-mode command: 0x{self.cmd:02X}")

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, bytes((self.status,)) + self.mode.to_bytes())


@dataclass(frozen=True, slots=True)
class StatusReply:
    """Any other reply: ``reCmd``, status and raw data (0xFE with reCmd 0x00 for an
    unknown command; 0x00 for the 0x2x/0x3x setters)."""

    cmd: int
    status: int
    data: bytes = b""
    address: int = 0x00

    def __post_init__(self) -> None:
        _check_byte("address", self.address)
        _check_byte("cmd", self.cmd)
        _check_byte("status", self.status)
        if self.cmd == Cmd.UNKNOWN:
            if self.status != Status.UNKNOWN_COMMAND or self.data:
                raise ChafonError("reCmd 0x00 is only the unknown-command reply (0xFE, no data)")
        elif self.cmd not in (Cmd.INVENTORY, Cmd.INVENTORY_SINGLE) and not 0x20 <= self.cmd <= 0x3F:
            raise ChafonError(f"reCmd 0x{self.cmd:02X} is not a reply of this protocol")
        if len(self.data) + _MIN_LEN_TO_HOST > _MAX_SETTER_REPLY_LEN:
            raise ChafonError("reply data too long", self.data)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, bytes((self.status,)) + self.data)


@dataclass(frozen=True, slots=True)
class TagPushed:
    """Scan-mode push ``Len Adr 0xEE 0x00 EPC CRC``: one tag seen."""

    epc: bytes
    address: int = 0x00
    cmd: int = field(default=Cmd.TAG_PUSHED, init=False)
    status: int = field(default=Status.OK, init=False)

    def __post_init__(self) -> None:
        _check_byte("address", self.address)
        if not 0 < len(self.epc) <= 0xFF - _MIN_LEN_TO_HOST:
            raise ChafonError("EPC length out of range", self.epc)

    def encode(self) -> bytes:
        return _frame(self.address, self.cmd, bytes((self.status,)) + self.epc)


CommandFrame = Inventory | InventorySingle | GetReaderInfo | SetWorkMode | GetWorkMode | Command
ReplyFrame = InventoryReply | ReaderInfoReply | WorkModeReply | StatusReply | TagPushed
Frame = CommandFrame | ReplyFrame


@dataclass(frozen=True, slots=True)
class Discarded:
    """``count`` bytes skipped while hunting for a frame, and why (the first reason)."""

    count: int
    reason: str


# --- parsing ----------------------------------------------------------------


def _parse_command(address: int, cmd: int, data: bytes) -> CommandFrame:
    if not data:
        if cmd == Cmd.INVENTORY:
            return Inventory(address)
        if cmd == Cmd.INVENTORY_SINGLE:
            return InventorySingle(address)
        if cmd == Cmd.GET_READER_INFO:
            return GetReaderInfo(address)
        if cmd == Cmd.GET_WORK_MODE:
            return GetWorkMode(address)
    if cmd == Cmd.SET_WORK_MODE and len(data) == _WORK_MODE_LEN:
        return SetWorkMode(WorkMode.from_bytes(data), address)
    return Command(cmd, data, address)


def _parse_epcs(data: bytes) -> tuple[bytes, ...]:
    if not data:
        raise ChafonError("inventory reply without Num", data)
    num = data[0]
    epcs = []
    pos = 1
    for _ in range(num):
        if pos >= len(data):
            raise ChafonError("inventory reply shorter than Num says", data)
        epc_len = data[pos]
        end = pos + 1 + epc_len
        if epc_len == 0 or end > len(data):
            raise ChafonError("bad EPC length in inventory reply", data)
        epcs.append(data[pos + 1 : end])
        pos = end
    if pos != len(data):
        raise ChafonError("trailing bytes in inventory reply", data)
    return tuple(epcs)


def _parse_reply(address: int, cmd: int, status: int, data: bytes) -> ReplyFrame:
    if cmd == Cmd.TAG_PUSHED:
        if status != Status.OK or not data:
            raise ChafonError("bad tag push", data)
        return TagPushed(data, address)
    if cmd in (Cmd.INVENTORY, Cmd.INVENTORY_SINGLE):
        if status in _INVENTORY_DATA_STATUSES:
            return InventoryReply(status, _parse_epcs(data), address, cmd)
        if not data:
            return InventoryReply(status, (), address, cmd)
        # An error status with data is not described: keep it raw.
        return StatusReply(cmd, status, data, address)
    if status == Status.OK:
        if cmd == Cmd.GET_READER_INFO and len(data) == _READER_INFO_LEN:
            return ReaderInfoReply(
                version=(data[0], data[1]),
                reader_type=data[2],
                tr_type=data[3],
                dmax_fre=data[4],
                dmin_fre=data[5],
                power=data[6],
                scan_time=data[7],
                address=address,
                status=status,
            )
        if cmd in (Cmd.SET_WORK_MODE, Cmd.GET_WORK_MODE) and len(data) == _WORK_MODE_LEN:
            return WorkModeReply(WorkMode.from_bytes(data), cmd, address, status)
    return StatusReply(cmd, status, data, address)


def _parse_checked(frame: bytes | bytearray | memoryview, direction: Direction) -> Frame:
    """Decode a frame whose length and CRC are already known to be right."""
    address = frame[1]
    cmd = frame[2]
    if direction is Direction.TO_READER:
        return _parse_command(address, cmd, bytes(frame[3:-2]))
    return _parse_reply(address, cmd, frame[3], bytes(frame[4:-2]))


def parse_frame(data: bytes, *, direction: Direction = Direction.TO_HOST) -> Frame:
    """Parse exactly one complete frame.

    Raises:
        ChafonError: wrong length, bad CRC, or a body that does not decode.
    """
    min_len = _MIN_LEN_TO_HOST if direction is Direction.TO_HOST else _MIN_LEN_TO_READER
    if len(data) < min_len + 1:
        raise ChafonError("frame too short", data)
    if data[0] < min_len:
        raise ChafonError(f"Len {data[0]} below minimum {min_len}", data)
    if data[0] + 1 != len(data):
        raise ChafonError(f"Len {data[0]} does not match {len(data)} bytes", data)
    if crc16_mcrf4xx(data) != 0:
        raise ChafonError("bad CRC", data)
    if direction is Direction.TO_HOST and not _plausible_reply(bytearray(data), 0, len(data)):
        raise ChafonError("not a reply of this protocol", data)
    return _parse_checked(data, direction)


def _plausible_reply(buf: bytearray, pos: int, avail: int) -> bool:
    """Whether a reply can start at ``pos``, judging only the bytes present.

    Cuts false starts (an EPC byte read as a length) before they make the
    decoder wait for up to 255 bytes. Only rules PROTOCOLS.md states: reCmd is
    0x00 (unknown command, status 0xFE, no data), 0x01, 0x0F, 0x2x/0x3x, or a
    0xEE push with status 0x00.
    """
    if avail < 3:
        return True
    length = buf[pos]
    cmd = buf[pos + 2]
    if cmd in (0x01, 0x0F):
        return True
    if cmd == 0xEE:
        return length > _MIN_LEN_TO_HOST and (avail < 4 or buf[pos + 3] == 0x00)
    if cmd == 0x00:
        return length == _MIN_LEN_TO_HOST and (avail < 4 or buf[pos + 3] == 0xFE)
    return 0x20 <= cmd <= 0x3F and length <= _MAX_SETTER_REPLY_LEN


class ChafonDecoder:
    """Stream decoder for one direction of one connection.

    Make a new decoder per connection (STYLE.md §3: no stale buffer across a
    reconnect). ``feed`` never raises.
    """

    __slots__ = ("_buf", "_direction", "_min_len")

    def __init__(self, direction: Direction = Direction.TO_HOST) -> None:
        self._direction = direction
        self._min_len = _MIN_LEN_TO_HOST if direction is Direction.TO_HOST else _MIN_LEN_TO_READER
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame (always < MAX_FRAME_LEN)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | Discarded]:
        """Add bytes; return every complete frame and every skipped run, in order."""
        self._buf += data
        return self._drain(at_gap=False)

    def idle(self) -> list[Frame | Discarded]:
        """The line has been silent longer than the inter-byte limit (15 ms).

        An incomplete frame cannot complete any more: drop it and hunt through
        what follows it. Returns the events this produces.
        """
        return self._drain(at_gap=True)

    def reset(self) -> int:
        """Forget any partial input; return how many bytes were dropped."""
        n = len(self._buf)
        self._buf.clear()
        return n

    def _drain(self, *, at_gap: bool) -> list[Frame | Discarded]:
        buf = self._buf
        out: list[Frame | Discarded] = []
        size = len(buf)
        pos = 0
        drop_from = -1
        drop_reason = ""
        min_len = self._min_len
        to_host = self._direction is Direction.TO_HOST
        while pos < size:
            reason = ""
            length = buf[pos]
            avail = size - pos
            total = length + 1
            if length < min_len:
                reason = "bad_length"
            elif to_host and not _plausible_reply(buf, pos, avail):
                reason = "bad_header"
            elif avail < total:
                if not at_gap:
                    break
                reason = "truncated"
            else:
                view = memoryview(buf)[pos : pos + total]
                try:
                    if crc16_mcrf4xx(view) != 0:
                        reason = "bad_crc"
                    else:
                        try:
                            frame = _parse_checked(view, self._direction)
                        except ChafonError:
                            # Length and CRC agree, so this is a real frame with
                            # a body we cannot read: skip all of it.
                            if drop_from < 0:
                                drop_from, drop_reason = pos, "malformed"
                            pos += total
                            continue
                finally:
                    view.release()
                if not reason:
                    if drop_from >= 0:
                        out.append(Discarded(pos - drop_from, drop_reason))
                        drop_from = -1
                    out.append(frame)
                    pos += total
                    continue
            if drop_from < 0:
                drop_from, drop_reason = pos, reason
            pos += 1
        if drop_from >= 0:
            out.append(Discarded(pos - drop_from, drop_reason))
        del buf[:pos]
        return out
