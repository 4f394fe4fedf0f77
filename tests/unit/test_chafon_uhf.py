"""The Chafon UHF codec (PROTOCOLS.md, "UHF RFID reader"): golden frames, the
stream decoder's resynchronisation, and hypothesis properties.

Longer than 400 lines because each golden frame of PROTOCOLS.md is a case, and the
decoder gets its resynchronisation cases and properties.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.codecs.chafon_uhf import (
    MAX_FRAME_LEN,
    ChafonDecoder,
    ChafonError,
    Command,
    Direction,
    Discarded,
    Frame,
    GetReaderInfo,
    GetWorkMode,
    Inventory,
    InventoryReply,
    InventorySingle,
    InventoryStatus,
    ReaderInfoReply,
    SetWorkMode,
    StatusReply,
    TagPushed,
    WorkMode,
    WorkModeReply,
    parse_frame,
)
from drivers.codecs.errors import ProtocolError

EPC = bytes.fromhex("E2000017221100881520ABCD")
TO_READER = Direction.TO_READER
TO_HOST = Direction.TO_HOST

GOLDEN: list[tuple[str, str, Direction, Frame]] = [
    ("inventory", "04 00 01 DB 4B", TO_READER, Inventory(0x00)),
    ("inventory broadcast", "04 FF 01 1B B4", TO_READER, Inventory(0xFF)),
    ("get reader info", "04 00 21 D9 6A", TO_READER, GetReaderInfo(0x00)),
    ("no tag", "05 00 01 FB F2 3D", TO_HOST, InventoryReply(InventoryStatus.NO_TAG)),
    (
        "one tag",
        "13 00 01 01 01 0C E2 00 00 17 22 11 00 88 15 20 AB CD 41 D8",
        TO_HOST,
        InventoryReply(InventoryStatus.DONE, (EPC,)),
    ),
    (
        "pushed tag",
        "11 00 EE 00 E2 00 00 17 22 11 00 88 15 20 AB CD 96 87",
        TO_HOST,
        TagPushed(EPC),
    ),
    (
        "set scan mode",
        "0A 00 35 01 02 04 00 01 00 56 F5",
        TO_READER,
        SetWorkMode(WorkMode.scan(tag_time=0)),
    ),
    ("answer mode", "0A 00 35 00 00 00 00 00 00 C1 8C", TO_READER, SetWorkMode(WorkMode.answer())),
]
GOLDEN_IDS = [g[0] for g in GOLDEN]
# Not a frame start anywhere: 0xFF claims a 256-byte frame, 0x13 one that the
# real frame's bytes cannot complete with a good CRC.
GARBAGE = bytes.fromhex("FF 13 00 01 67 61 72 62 00 09")


def frames_of(events: list[Frame | Discarded]) -> list[Frame]:
    return [e for e in events if not isinstance(e, Discarded)]


def discarded_bytes(events: list[Frame | Discarded]) -> int:
    return sum(e.count for e in events if isinstance(e, Discarded))


def feed_all(
    decoder: ChafonDecoder, chunks: list[bytes], *, idle: bool = False
) -> list[Frame | Discarded]:
    out: list[Frame | Discarded] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    if idle:
        out += decoder.idle()
    return out


# --- golden frames ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_encode(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    assert frame.encode() == bytes.fromhex(hexa)


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_parse(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    assert parse_frame(bytes.fromhex(hexa), direction=direction) == frame


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_stream_whole(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    decoder = ChafonDecoder(direction)
    assert decoder.feed(bytes.fromhex(hexa)) == [frame]
    assert decoder.pending == 0


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_byte_at_a_time(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    data = bytes.fromhex(hexa)
    decoder = ChafonDecoder(direction)
    events = [decoder.feed(data[i : i + 1]) for i in range(len(data))]
    assert events[:-1] == [[]] * (len(data) - 1)  # "not enough yet" is not an error
    assert events[-1] == [frame]


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_trailing_bytes(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    data = bytes.fromhex(hexa)
    decoder = ChafonDecoder(direction)
    # The start of the next frame stays pending, then completes it.
    assert decoder.feed(data + data[:3]) == [frame]
    assert decoder.pending == 3
    assert decoder.feed(data[3:]) == [frame]
    assert decoder.pending == 0


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_after_garbage(name: str, hexa: str, direction: Direction, frame: Frame) -> None:
    data = bytes.fromhex(hexa)
    decoder = ChafonDecoder(direction)
    # A false start may hold the frame until the line goes quiet (idle) or the
    # next frame completes the false candidate's CRC check.
    events = feed_all(decoder, [GARBAGE + data], idle=True)
    assert frames_of(events) == [frame]
    assert discarded_bytes(events) == len(GARBAGE)
    assert isinstance(events[0], Discarded)
    # Byte at a time gives the same result.
    decoder = ChafonDecoder(direction)
    stream = GARBAGE + data
    events = feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))], idle=True)
    assert frames_of(events) == [frame]
    assert discarded_bytes(events) == len(GARBAGE)


@pytest.mark.parametrize(("name", "hexa", "direction", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_garbage_resolved_by_next_frames(
    name: str, hexa: str, direction: Direction, frame: Frame
) -> None:
    # Without idle(): enough following frames complete the false candidate,
    # whose CRC then fails, and every real frame is recovered.
    data = bytes.fromhex(hexa)
    decoder = ChafonDecoder(direction)
    copies = MAX_FRAME_LEN // len(data) + 2
    events = decoder.feed(GARBAGE + data * copies)
    assert frames_of(events) == [frame] * copies
    assert discarded_bytes(events) == len(GARBAGE)


# --- parse_frame errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (bytes.fromhex("04 00 01 DB"), "too short"),
        (bytes.fromhex("04 00 01 DB 4C"), "bad CRC"),
        (bytes.fromhex("04 00 01 DB 4B 00"), "does not match"),
        (bytes.fromhex("05 00 01 FB F2"), "does not match"),
    ],
)
def test_parse_frame_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ChafonError, match=reason) as info:
        parse_frame(data, direction=TO_READER)
    assert isinstance(info.value, ProtocolError)


def test_parse_frame_below_min_len() -> None:
    with pytest.raises(ChafonError, match="below minimum"):
        parse_frame(Inventory().encode() + b"\x00", direction=TO_HOST)  # Len 4 < 5 for replies


def _with_crc(body: bytes) -> bytes:
    from drivers.codecs.crc import crc16_mcrf4xx

    crc = crc16_mcrf4xx(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def test_malformed_body_with_good_crc() -> None:
    # Status 0x01 with Num = 2 but only one EPC.
    bad = _with_crc(bytes.fromhex("0A 00 01 01 02 03 AA BB CC"))
    with pytest.raises(ChafonError, match="shorter than Num"):
        parse_frame(bad)
    # In a stream the whole frame is skipped (length and CRC agree) and the
    # next frame is found.
    decoder = ChafonDecoder()
    good = TagPushed(EPC).encode()
    assert decoder.feed(bad + good) == [Discarded(len(bad), "malformed"), TagPushed(EPC)]


def test_bad_crc_then_good_frame() -> None:
    good = TagPushed(EPC).encode()
    corrupt = bytearray(good)
    corrupt[5] ^= 0x40
    decoder = ChafonDecoder()
    events = decoder.feed(bytes(corrupt) + good)
    assert events == [Discarded(len(good), "bad_crc"), TagPushed(EPC)]
    # A corrupted length byte can make a false start that waits for more
    # bytes; the line going quiet (idle) releases the frame behind it.
    corrupt = bytearray(good)
    corrupt[0] = 0x60
    events = decoder.feed(bytes(corrupt) + good) + decoder.idle()
    assert frames_of(events) == [TagPushed(EPC)]
    assert discarded_bytes(events) == len(good)


def test_idle_drops_truncated_frame() -> None:
    decoder = ChafonDecoder()
    good = TagPushed(EPC).encode()
    assert decoder.feed(good[:7]) == []
    assert decoder.idle() == [Discarded(7, "truncated")]
    assert decoder.pending == 0
    assert decoder.feed(good) == [TagPushed(EPC)]


def test_reset() -> None:
    decoder = ChafonDecoder()
    decoder.feed(b"\x11\x00\xee")
    assert decoder.reset() == 3
    assert decoder.pending == 0


# --- typed frames --------------------------------------------------------------------


def test_multi_frame_inventory() -> None:
    epcs = tuple(bytes([i]) * 12 for i in range(3))
    first = InventoryReply(InventoryStatus.MORE_FRAMES, epcs[:2])
    last = InventoryReply(InventoryStatus.DONE, epcs[2:])
    assert first.more_follow
    assert not last.more_follow
    assert ChafonDecoder().feed(first.encode() + last.encode()) == [first, last]


def test_replies_round_trip() -> None:
    frames: list[Frame] = [
        ReaderInfoReply(
            version=(3, 1),
            reader_type=9,
            tr_type=2,
            dmax_fre=0x3E,
            dmin_fre=0,
            power=30,
            scan_time=10,
        ),
        WorkModeReply(WorkMode.scan(3), cmd=0x36),
        WorkModeReply(WorkMode.answer(), cmd=0x35),
        StatusReply(0x00, 0xFE),
        StatusReply(0x35, 0x00),  # a real reader acknowledging 0x35 with no data
        StatusReply(0x24, 0x00),
        InventoryReply(InventoryStatus.DONE, (EPC,), cmd=0x0F),
        InventoryReply(0xFE),
    ]
    for frame in frames:
        assert parse_frame(frame.encode()) == frame


def test_commands_round_trip() -> None:
    frames: list[Frame] = [
        InventorySingle(3),
        GetWorkMode(),
        Command(0x28, b"\x06"),
        Command(0x01, b"\x00\x04"),  # inventory with TID parameters: kept generic
        Command(0x35, b"\x01"),  # wrong shape for set work mode: kept generic
    ]
    for frame in frames:
        assert parse_frame(frame.encode(), direction=TO_READER) == frame


@pytest.mark.parametrize(
    "make",
    [
        lambda: Inventory(256),
        lambda: TagPushed(b""),
        lambda: InventoryReply(InventoryStatus.NO_TAG, (EPC,)),
        lambda: InventoryReply(InventoryStatus.DONE, (b"",)),
        lambda: InventoryReply(InventoryStatus.DONE, (EPC,) * 20),
        lambda: InventoryReply(0x01, cmd=0x21),
        lambda: WorkMode(read_mode=300),
        lambda: WorkModeReply(WorkMode(), cmd=0x01),
        lambda: StatusReply(0xEE, 0),
        lambda: StatusReply(0x00, 0x00),
        lambda: StatusReply(0x99, 0x00),
        lambda: StatusReply(0x24, 0x00, bytes(33)),
        lambda: Command(0x22, bytes(252)),
        lambda: ReaderInfoReply(version=(1, 2, 3)),  # type: ignore[arg-type]
    ],
)
def test_invalid_frames_fail_at_construction(make: object) -> None:
    with pytest.raises(ChafonError):
        make()  # type: ignore[operator]


def test_pair_commands_and_replies() -> None:
    """Host and simulator codecs against each other, in memory, byte by byte."""
    host, reader = ChafonDecoder(TO_HOST), ChafonDecoder(TO_READER)
    commands: list[Frame] = [Inventory(), SetWorkMode(WorkMode.scan()), GetReaderInfo()]
    replies: list[Frame] = [InventoryReply(1, (EPC,)), WorkModeReply(WorkMode.scan(), 0x35)]
    wire_out = b"".join(f.encode() for f in commands)
    wire_in = b"".join(f.encode() for f in replies)
    got_cmds = [e for i in range(len(wire_out)) for e in reader.feed(wire_out[i : i + 1])]
    got_replies = [e for i in range(len(wire_in)) for e in host.feed(wire_in[i : i + 1])]
    assert got_cmds == commands
    assert got_replies == replies


# --- hypothesis ----------------------------------------------------------------------

byte = st.integers(0, 255)
epc = st.binary(min_size=1, max_size=16)
work_mode = st.builds(WorkMode, byte, byte, byte, byte, byte, byte)
_STATUS_CMDS = [c for c in range(0x20, 0x40) if c not in (0x21, 0x35, 0x36)]

reply_frames = st.one_of(
    st.builds(TagPushed, epc, byte),
    st.builds(
        InventoryReply,
        st.sampled_from([1, 2, 3]),
        st.lists(epc, max_size=8).map(tuple),
        byte,
        st.sampled_from([0x01, 0x0F]),
    ),
    st.builds(InventoryReply, st.sampled_from([0xFB, 0xFE, 0xF8]), st.just(()), byte),
    st.builds(
        ReaderInfoReply,
        st.tuples(byte, byte),
        byte,
        byte,
        byte,
        byte,
        byte,
        byte,
        byte,
    ),
    st.builds(WorkModeReply, work_mode, st.sampled_from([0x35, 0x36]), byte),
    st.builds(StatusReply, st.sampled_from(_STATUS_CMDS), byte, st.binary(max_size=30), byte),
)
command_frames = st.one_of(
    st.builds(Inventory, byte),
    st.builds(InventorySingle, byte),
    st.builds(GetReaderInfo, byte),
    st.builds(GetWorkMode, byte),
    st.builds(SetWorkMode, work_mode, byte),
    st.builds(
        Command,
        st.sampled_from([0x22, 0x24, 0x25, 0x28, 0x2F, 0x3F, 0x50, 0x99]),
        st.binary(max_size=40),
        byte,
    ),
)


@given(reply_frames)
def test_reply_round_trip(frame: Frame) -> None:
    data = frame.encode()
    assert parse_frame(data, direction=TO_HOST) == frame
    assert ChafonDecoder(TO_HOST).feed(data) == [frame]


@given(command_frames)
def test_command_round_trip(frame: Frame) -> None:
    data = frame.encode()
    assert parse_frame(data, direction=TO_READER) == frame
    assert ChafonDecoder(TO_READER).feed(data) == [frame]


@given(st.binary(max_size=600), st.sampled_from(list(Direction)))
@example(b"\xff" * 300, Direction.TO_HOST)
@example(b"\x05\x00\x01\xfb\xf2\x3d" * 3, Direction.TO_READER)
def test_any_bytes_never_raise(data: bytes, direction: Direction) -> None:
    decoder = ChafonDecoder(direction)
    events = decoder.feed(data)
    for event in events:
        assert isinstance(event, Discarded) or hasattr(event, "encode")
    assert decoder.pending < MAX_FRAME_LEN
    events += decoder.idle()
    assert decoder.pending == 0
    consumed = sum(len(e.encode()) if not isinstance(e, Discarded) else e.count for e in events)
    assert consumed == len(data)  # every byte is either in a frame or counted


@st.composite
def stream_and_splits(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    parts = draw(st.lists(st.one_of(reply_frames.map(lambda f: f.encode()), st.binary(max_size=8))))
    stream = b"".join(parts)
    splits = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    return stream, splits


@given(stream_and_splits())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_split_points_do_not_matter(case: tuple[bytes, list[int]]) -> None:
    stream, splits = case
    whole = feed_all(ChafonDecoder(), [stream], idle=True)
    bounds = [0, *splits, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    pieces = feed_all(ChafonDecoder(), chunks, idle=True)
    assert frames_of(pieces) == frames_of(whole)
    assert discarded_bytes(pieces) == discarded_bytes(whole)


@given(
    st.lists(reply_frames, min_size=2, max_size=6),
    st.data(),
)
@settings(derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_corruption_then_resync(frames: list[Frame], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(frames) - 2), label="corrupted frame")
    encoded = [f.encode() for f in frames]
    target = bytearray(encoded[k])
    pos = data.draw(st.integers(0, len(target) - 1), label="byte")
    target[pos] ^= data.draw(st.integers(1, 255), label="xor")
    encoded[k] = bytes(target)
    events = feed_all(ChafonDecoder(), encoded, idle=True)
    got = frames_of(events)
    assert any(isinstance(e, Discarded) for e in events)
    assert got[:k] == frames[:k]
    # Resynchronised: the frames after the next one are all there, in order
    # (the next one could only be lost to a false CRC match, p ~ 2**-16).
    assert got[len(got) - len(frames[k + 2 :]) :] == frames[k + 2 :]
    assert frames[k] not in got[k : k + 1] or frames[k] in frames[k + 1 :]


@given(st.lists(st.binary(max_size=80), max_size=40))
def test_buffer_stays_bounded(chunks: list[bytes]) -> None:
    decoder = ChafonDecoder()
    for chunk in chunks:
        decoder.feed(chunk)
        assert decoder.pending < MAX_FRAME_LEN
