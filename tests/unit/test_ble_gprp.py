"""The ``$GPRP`` line codec and payload decoders (PROTOCOLS.md, "Elder-care
wearables"): golden lines, resynchronisation, and hypothesis properties."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.codecs.ble_gprp import (
    BtHomeButton,
    BtHomePayload,
    Discarded,
    GprpDecoder,
    GprpError,
    GprpReport,
    Ignored,
    IngicsPayload,
    ad_structures,
    decode_bthome,
    decode_ingics,
    decode_payload,
    encode_bthome,
    encode_ingics,
    parse_line,
)
from drivers.codecs.errors import ProtocolError

Event = GprpReport | Ignored | Discarded

IBS01G_LINE = (
    b"$GPRP,C1A2B3C4D5E6,001122334455,-67,02010612FF590080BC2C0109FFFFFFFF000006000000\r\n"
)
BTHOME_LINE = b"$GPRP,A4C138000001,001122334455,-71,0201060A16D2FC44002A015A3A01\r\n"

GOLDEN: list[tuple[str, bytes, GprpReport, IngicsPayload | BtHomePayload]] = [
    (
        "iBS01G button+fall",
        IBS01G_LINE,
        GprpReport(
            "C1A2B3C4D5E6",
            "001122334455",
            -67,
            bytes.fromhex("02010612FF590080BC2C0109FFFFFFFF000006000000"),
        ),
        IngicsPayload(
            battery_v=3.0, button=True, moving=False, fall=True, subtype=0x06, events=0x09
        ),
    ),
    (
        "BTHome press",
        BTHOME_LINE,
        GprpReport(
            "A4C138000001",
            "001122334455",
            -71,
            bytes.fromhex("0201060A16D2FC44002A015A3A01"),
        ),
        BtHomePayload(packet_id=42, battery_pct=90, button=BtHomeButton.PRESS, trigger_based=True),
    ),
]
IDS = [g[0] for g in GOLDEN]


def reports(events: list[Event]) -> list[GprpReport]:
    return [e for e in events if isinstance(e, GprpReport)]


def feed_chunks(decoder: GprpDecoder, chunks: list[bytes]) -> list[Event]:
    out: list[Event] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


# --- golden lines ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "line", "report", "payload"), GOLDEN, ids=IDS)
def test_golden_parse_and_encode(
    name: str, line: bytes, report: GprpReport, payload: IngicsPayload | BtHomePayload
) -> None:
    assert parse_line(line) == report
    assert report.encode() == line
    assert decode_payload(report.adv) == payload


@pytest.mark.parametrize(("name", "line", "report", "payload"), GOLDEN, ids=IDS)
def test_golden_stream(
    name: str, line: bytes, report: GprpReport, payload: IngicsPayload | BtHomePayload
) -> None:
    assert GprpDecoder().feed(line) == [report]
    # byte at a time
    decoder = GprpDecoder()
    per_byte = [decoder.feed(line[i : i + 1]) for i in range(len(line))]
    assert per_byte[:-1] == [[]] * (len(line) - 1)
    assert per_byte[-1] == [report]
    # trailing bytes stay pending until their line ends
    decoder = GprpDecoder()
    assert decoder.feed(line + line[:10]) == [report]
    assert decoder.pending == 10
    assert decoder.feed(line[10:]) == [report]
    # garbage prefix on the same line, and a garbage line before
    for garbage in (b"\x00\xff#x1", b"$GPRP,12,zz", b"noise\r\n"):
        events = GprpDecoder().feed(garbage + line)
        assert reports(events) == [report]
        assert sum(e.count for e in events if isinstance(e, Discarded)) == len(garbage)


@pytest.mark.parametrize(("name", "line", "report", "payload"), GOLDEN, ids=IDS)
def test_golden_lf_only_and_lower_case(
    name: str, line: bytes, report: GprpReport, payload: IngicsPayload | BtHomePayload
) -> None:
    assert GprpDecoder().feed(line.replace(b"\r\n", b"\n")) == [report]
    lower = line[:6] + line[6:].lower()
    assert parse_line(lower) == report


def test_golden_payload_encoders() -> None:
    assert encode_ingics(battery_v=3.0, button=True, fall=True, subtype=0x06) == GOLDEN[0][2].adv
    assert (
        encode_bthome(packet_id=42, battery_pct=90, button=BtHomeButton.PRESS, trigger_based=True)
        == GOLDEN[1][2].adv
    )


def test_unix_time_field() -> None:
    line = BTHOME_LINE.replace(b"\r\n", b",1764403200\r\n")
    report = parse_line(line)
    assert isinstance(report, GprpReport)
    assert report.unix_time == 1764403200
    assert report.encode() == line


# --- other report types and malformed lines ----------------------------------------


def test_other_report_types_are_ignored_not_errors() -> None:
    events = GprpDecoder().feed(b"$RSPR,A4C138000001,001122334455,-80,0909\r\n$LRHB,1\r\n")
    assert events == [Ignored("RSPR"), Ignored("LRHB")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$GPRP,A4C138000001,001122334455,-71\r\n", "fields"),
        (b"$GPRP,A4C13800000,001122334455,-71,0201\r\n", "bad MAC"),
        (b"$GPRP,A4C138000001,00112233445G,-71,0201\r\n", "bad MAC"),
        (b"$GPRP,A4C138000001,001122334455,-7x,0201\r\n", "bad rssi"),
        (b"$GPRP,A4C138000001,001122334455,-300,0201\r\n", "bad rssi"),
        (b"$GPRP,A4C138000001,001122334455,-71,020\r\n", "bad advertisement"),
        (b"$GPRP,A4C138000001,001122334455,-71,0201,12a\r\n", "bad unix time"),
        (b"$GPRP,A4C138000001,001122334455,-71,0201,1,2\r\n", "fields"),
        (b"$GPRP,\xff\r\n", "not ASCII"),
        (b"$,\r\n", "not a report"),
    ],
)
def test_malformed_lines(line: bytes, reason: str) -> None:
    with pytest.raises(GprpError, match=reason) as info:
        parse_line(line)
    assert isinstance(info.value, ProtocolError)
    events = GprpDecoder().feed(line + BTHOME_LINE)
    assert isinstance(events[0], Discarded)
    assert events[1:] == [GOLDEN[1][2]]


def test_blank_lines_are_harmless() -> None:
    assert GprpDecoder().feed(b"\r\n\n  \r\n" + BTHOME_LINE) == [GOLDEN[1][2]]


def test_line_without_start_is_discarded() -> None:
    assert GprpDecoder().feed(b"hello\r\n") == [Discarded(7, "no_report_start")]


def test_over_long_line_is_bounded() -> None:
    decoder = GprpDecoder(max_line=200)
    events = decoder.feed(b"$GPRP," + b"A" * 500)
    assert events == []
    assert decoder.pending <= 200
    events = decoder.feed(b"AAAA\r\n" + BTHOME_LINE)
    assert events[0] == Discarded(6 + 500 + 6, "line_too_long")
    assert events[1:] == [GOLDEN[1][2]]
    # a long line that arrives whole
    events = GprpDecoder(max_line=200).feed(b"$" + b"x" * 300 + b"\n" + BTHOME_LINE)
    assert events == [Discarded(302, "line_too_long"), GOLDEN[1][2]]


# --- payloads ------------------------------------------------------------------------


def test_ingics_bits_and_models() -> None:
    p = decode_ingics(encode_ingics(battery_v=2.87, moving=True, subtype=0x03))
    assert p == IngicsPayload(2.87, button=False, moving=True, fall=False, subtype=3, events=2)
    assert p.model == "iBS01"
    assert GOLDEN[0][3].model == "iBS01G"  # type: ignore[union-attr]


def test_ingics_wrong_length_raises() -> None:
    adv = bytes.fromhex("020106") + bytes.fromhex("0AFF590080BC2C010900000000")[:11]
    with pytest.raises(GprpError):
        decode_ingics(adv)


def test_bthome_details() -> None:
    # not trigger based, no button, a voltage object, then an unknown object
    adv = bytes.fromhex("020106") + bytes.fromhex(
        "0D16D2FC40" + "0007" + "0150" + "0CB80B" + "F001"
    )
    assert decode_bthome(adv) == BtHomePayload(packet_id=7, battery_pct=0x50, voltage_v=3.0)
    encrypted = bytes.fromhex("020106") + bytes.fromhex("0616D2FC410007")
    assert decode_bthome(encrypted) is None
    truncated = bytes.fromhex("020106") + bytes.fromhex("0516D2FC400C")
    with pytest.raises(GprpError, match="truncated"):
        decode_bthome(truncated)
    v1 = bytes.fromhex("020106") + bytes.fromhex("0516D2FC2000")
    with pytest.raises(GprpError, match="version"):
        decode_bthome(v1)


def test_other_advertisements_decode_to_none() -> None:
    ibeacon = bytes.fromhex("0201061AFF4C000215" + "00" * 21)
    assert decode_payload(ibeacon) is None
    assert decode_payload(b"") is None
    with pytest.raises(GprpError):
        ad_structures(bytes.fromhex("0501"))


# --- hypothesis ----------------------------------------------------------------------

mac = st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper())
report_strategy = st.builds(
    GprpReport,
    mac,
    mac,
    st.integers(-128, 127),
    st.binary(max_size=62),
    st.one_of(st.none(), st.integers(0, 10**12 - 1)),
)


@given(report_strategy)
def test_report_round_trip(report: GprpReport) -> None:
    line = report.encode()
    assert parse_line(line) == report
    assert GprpDecoder().feed(line) == [report]


@given(
    st.floats(0, 655.35).map(lambda v: round(v, 2)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0x03, 0x06]),
)
def test_ingics_round_trip(v: float, button: bool, moving: bool, fall: bool, sub: int) -> None:
    adv = encode_ingics(battery_v=v, button=button, moving=moving, fall=fall, subtype=sub)
    p = decode_payload(adv)
    assert isinstance(p, IngicsPayload)
    assert (p.battery_v, p.button, p.moving, p.fall, p.subtype) == (v, button, moving, fall, sub)


@given(
    st.one_of(st.none(), st.integers(0, 255)),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.sampled_from(list(BtHomeButton))),
    st.booleans(),
)
def test_bthome_round_trip(
    packet_id: int | None, battery: int | None, button: int | None, trigger: bool
) -> None:
    adv = encode_bthome(
        packet_id=packet_id, battery_pct=battery, button=button, trigger_based=trigger
    )
    assert decode_payload(adv) == BtHomePayload(packet_id, battery, button, trigger)


@given(st.binary(max_size=2000))
@example(b"$" * 1500)
@example(b"\n" * 10 + b"$GPRP," * 300)
def test_any_bytes_never_raise(data: bytes) -> None:
    decoder = GprpDecoder()
    for event in decoder.feed(data):
        assert isinstance(event, GprpReport | Ignored | Discarded)
    assert decoder.pending <= 1024


@given(st.binary(max_size=64))
def test_any_advertisement_decodes_or_raises_protocol_error(adv: bytes) -> None:
    with contextlib.suppress(GprpError):
        decode_payload(adv)


@st.composite
def stream_and_splits(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    parts = draw(
        st.lists(
            st.one_of(
                report_strategy.map(lambda r: r.encode()),
                st.binary(max_size=20),
                st.just(b"$RSPR,1\r\n"),
            ),
            max_size=8,
        )
    )
    stream = b"".join(parts)
    splits = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    return stream, splits


@given(stream_and_splits())
def test_split_points_do_not_matter(case: tuple[bytes, list[int]]) -> None:
    stream, splits = case
    bounds = [0, *splits, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    whole = GprpDecoder().feed(stream)
    pieces = feed_chunks(GprpDecoder(), chunks)
    assert [e for e in pieces if not isinstance(e, Discarded)] == [
        e for e in whole if not isinstance(e, Discarded)
    ]
    assert sum(e.count for e in pieces if isinstance(e, Discarded)) == sum(
        e.count for e in whole if isinstance(e, Discarded)
    )


@given(st.lists(report_strategy, min_size=2, max_size=5), st.data())
def test_corrupted_line_then_resync(batch: list[GprpReport], data: st.DataObject) -> None:
    lines = [r.encode() for r in batch]
    k = data.draw(st.integers(0, len(lines) - 1))
    line = bytearray(lines[k])
    pos = data.draw(st.integers(0, len(line) - 3))  # keep its terminator
    line[pos] = data.draw(st.sampled_from(b"G,x$\x00-"))
    lines[k] = bytes(line)
    got = reports(GprpDecoder().feed(b"".join(lines)))
    others = batch[:k] + batch[k + 1 :]
    # Every other line survives; the corrupted one is dropped or, if the
    # change happened to keep it valid, reported as what it now says.
    if len(got) == len(batch):  # the change happened to keep the line valid
        assert got[:k] + got[k + 1 :] == others
    else:
        assert got == others
