"""The door-node-v1 map against every door golden frame of PROTOCOLS.md."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codecs.door_node_map import (
    CARD_ID_REGISTER_COUNT,
    DoorNodeMap,
    DoorNodeMapError,
    FunctionCode,
    ModbusRequest,
    decode_card_id,
    encode_card_id,
    pulse_address,
    pulse_tenths,
    relay_coil,
)


def crc16_modbus(data: bytes) -> bytes:
    """CRC-16/MODBUS (init 0xFFFF, reflected poly 0xA001), low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def rtu(request: ModbusRequest) -> bytes:
    body = request.encode()
    return body + crc16_modbus(body)


def golden(text: str) -> bytes:
    return bytes.fromhex(text)


NODE = DoorNodeMap()

# Every door golden frame of PROTOCOLS.md, "Door node, door-node-v1".
GOLDEN = [
    ("pulse relay 1 for 700 ms", NODE.pulse_lock(pulse_tenths(700)), "01 05 02 00 00 07 8D B0"),
    ("pulse relay 1 for 3 s", NODE.pulse_lock(pulse_tenths(3000)), "01 05 02 00 00 1E 4C 7A"),
    (
        "read 8 discrete inputs",
        ModbusRequest(1, FunctionCode.READ_DISCRETE_INPUTS, 0, 8),
        "01 02 00 00 00 08 79 CC",
    ),
    ("read the 2 door inputs", NODE.read_door_inputs(), "01 02 00 00 00 02 F9 CB"),
    ('poll "new card", reader 2', NODE.poll_new_card(), "02 01 03 F8 00 01 7C 4C"),
    ("read card id regs, reader 2", NODE.read_card_id(), "02 03 03 EA 00 0A E4 4E"),
    ("re-arm (coil 1016 = 0)", NODE.rearm(), "02 05 03 F8 00 00 4C 4C"),
]


@pytest.mark.parametrize(("name", "request_", "frame"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_frames(name: str, request_: ModbusRequest, frame: str) -> None:
    assert rtu(request_) == golden(frame), name


@pytest.mark.parametrize(("name", "request_", "frame"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_frames_have_zero_residue(name: str, request_: ModbusRequest, frame: str) -> None:
    data = golden(frame)
    assert crc16_modbus(data) == b"\x00\x00", name


def test_crc_helper_on_common_golden_frames() -> None:
    # The helper itself, checked on the "Common: Modbus RTU" golden frames.
    for frame in (
        "01 03 00 00 00 02 C4 0B",
        "01 03 04 01 6F 01 75 0B A5",
        "01 06 00 10 01 75 48 78",
        "01 83 02 C0 F1",
    ):
        data = golden(frame)
        assert crc16_modbus(data[:-2]) == data[-2:]


def test_other_requests() -> None:
    assert NODE.hold_lock(True).encode() == golden("01 05 00 00 FF 00")
    assert NODE.hold_lock(False).encode() == golden("01 05 00 00 00 00")
    assert NODE.beep(accept=True).encode() == golden("02 05 03 F6 FF 00")
    assert NODE.beep(accept=False).encode() == golden("02 05 03 F7 FF 00")
    assert NODE.read_relays().encode() == golden("01 01 00 00 00 08")


def test_configurable_slaves_and_relay() -> None:
    node = DoorNodeMap(relay_slave=5, reader_slave=9, lock_relay=3)
    assert node.pulse_lock(30).encode() == golden("05 05 02 02 00 1E")
    assert node.poll_new_card().encode() == golden("09 01 03 F8 00 01")
    assert node.hold_lock(True).encode() == golden("05 05 00 02 FF 00")


def test_addresses() -> None:
    assert pulse_address(1) == 0x0200
    assert pulse_address(8) == 0x0207
    assert relay_coil(1) == 0
    assert relay_coil(8) == 7
    for bad in (0, 9):
        with pytest.raises(DoorNodeMapError):
            pulse_address(bad)
        with pytest.raises(DoorNodeMapError):
            relay_coil(bad)


@pytest.mark.parametrize(
    ("ms", "tenths"), [(100, 1), (700, 7), (3000, 30), (3050, 31), (1, 1), (6_553_500, 65535)]
)
def test_pulse_tenths(ms: int, tenths: int) -> None:
    assert pulse_tenths(ms) == tenths


@pytest.mark.parametrize("ms", [0, -100, 6_553_501])
def test_pulse_tenths_rejects(ms: int) -> None:
    with pytest.raises(DoorNodeMapError):
        pulse_tenths(ms)


@pytest.mark.parametrize(
    "kwargs", [{"relay_slave": 0}, {"reader_slave": 248}, {"lock_relay": 0}, {"lock_relay": 9}]
)
def test_map_rejects_bad_config(kwargs: dict[str, int]) -> None:
    with pytest.raises(DoorNodeMapError):
        DoorNodeMap(**kwargs)


def test_request_rejects_out_of_range() -> None:
    with pytest.raises(DoorNodeMapError):
        ModbusRequest(1, FunctionCode.WRITE_SINGLE_COIL, 0, 0x10000)
    with pytest.raises(DoorNodeMapError):
        ModbusRequest(1, FunctionCode.READ_COILS, -1, 1)


def test_decode_card_id() -> None:
    regs = [0] * 8 + [0x04A1, 0xB2C3]
    assert decode_card_id(regs) == "04A1B2C3"
    # Right-aligned: an odd number of significant bytes shares a register with padding.
    assert decode_card_id([0] * 8 + [0x00A1, 0xB2C3]) == "A1B2C3"
    assert decode_card_id([0] * 10) is None
    full = [0xFFFF] * 10
    assert decode_card_id(full) == "FF" * 20


def test_decode_card_id_rejects() -> None:
    with pytest.raises(DoorNodeMapError):
        decode_card_id([0] * 9)
    with pytest.raises(DoorNodeMapError):
        decode_card_id([0] * 9 + [0x10000])


def test_encode_card_id() -> None:
    assert encode_card_id("04a1b2c3") == (0,) * 8 + (0x04A1, 0xB2C3)
    for bad in ("", "00", "0000", "ABC", "XY", "AA" * 21):
        with pytest.raises(DoorNodeMapError):
            encode_card_id(bad)


@given(st.binary(min_size=1, max_size=20).filter(lambda b: b[0] != 0))
def test_card_id_round_trip(raw: bytes) -> None:
    card = raw.hex().upper()
    regs = encode_card_id(card)
    assert len(regs) == CARD_ID_REGISTER_COUNT
    assert decode_card_id(regs) == card
