"""Golden frames of PROTOCOLS.md "Common: Modbus RTU", through pymodbus's RTU framer.

The bus builds its requests with pymodbus's ``FramerRTU`` (and our
``RawCoilWrite`` for FC05 with a value); the simulators decode them with the
same framer on the server side. These tests pin both directions byte for byte,
CRC included, and the CRC-16/MODBUS properties.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    WriteSingleRegisterRequest,
)

from drivers.codecs.crc import crc16_modbus
from drivers.codecs.door_node_map import PULSE_ADDRESS_BASE
from drivers.codecs.temperature_gate_map import RegisterMap
from drivers.transports.modbus import RawCoilWrite

GOLDEN = {
    "read 2 holding regs from 0, slave 1": "01 03 00 00 00 02 C4 0B",
    "reply 36.7 and 37.3 (x0.1)": "01 03 04 01 6F 01 75 0B A5",
    "read 6 holding regs from 0, slave 1": "01 03 00 00 00 06 C5 C8",
    "write register 0x0010 = 373": "01 06 00 10 01 75 48 78",
    "exception, illegal data address": "01 83 02 C0 F1",
    # FC05 with a value (door node section), built with the bus's own request class.
    "pulse relay 1 for 700 ms": "01 05 02 00 00 07 8D B0",
    "pulse relay 1 for 3 s": "01 05 02 00 00 1E 4C 7A",
    "re-arm (coil 1016 = 0)": "02 05 03 F8 00 00 4C 4C",
}


def golden(name: str) -> bytes:
    return bytes.fromhex(GOLDEN[name])


def client_framer() -> FramerRTU:
    decoder = DecodePDU(False)
    decoder.register(RawCoilWrite)
    return FramerRTU(decoder)


def server_framer() -> FramerRTU:
    decoder = DecodePDU(True)
    decoder.register(RawCoilWrite)
    return FramerRTU(decoder)


REQUESTS: list[tuple[str, ModbusPDU]] = [
    (
        "read 2 holding regs from 0, slave 1",
        ReadHoldingRegistersRequest(address=0, count=2, dev_id=1),
    ),
    (
        "read 6 holding regs from 0, slave 1",
        ReadHoldingRegistersRequest(address=0, count=6, dev_id=1),
    ),
    (
        "write register 0x0010 = 373",
        WriteSingleRegisterRequest(address=0x0010, registers=[373], dev_id=1),
    ),
    ("pulse relay 1 for 700 ms", RawCoilWrite(PULSE_ADDRESS_BASE, 7, dev_id=1)),
    ("pulse relay 1 for 3 s", RawCoilWrite(PULSE_ADDRESS_BASE, 30, dev_id=1)),
    ("re-arm (coil 1016 = 0)", RawCoilWrite(1016, 0, dev_id=2)),
]


@pytest.mark.parametrize(("name", "request_pdu"), REQUESTS, ids=[name for name, _ in REQUESTS])
def test_request_encodes_to_golden_frame(name: str, request_pdu: ModbusPDU) -> None:
    assert client_framer().buildFrame(request_pdu) == golden(name)


@pytest.mark.parametrize(("name", "request_pdu"), REQUESTS, ids=[name for name, _ in REQUESTS])
def test_golden_request_decodes_on_the_server_side(name: str, request_pdu: ModbusPDU) -> None:
    frame = golden(name)
    used, decoded = server_framer().handleFrame(frame, 0, 0)
    assert used == len(frame)
    assert decoded is not None
    assert type(decoded) is type(request_pdu)
    assert decoded.dev_id == request_pdu.dev_id
    assert decoded.function_code == request_pdu.function_code
    assert decoded.address == request_pdu.address
    assert decoded.encode() == request_pdu.encode()


def test_golden_reply_decodes_to_the_two_temperatures() -> None:
    used, reply = client_framer().handleFrame(golden("reply 36.7 and 37.3 (x0.1)"), 1, 0)
    assert used == 9
    assert isinstance(reply, ReadHoldingRegistersResponse)
    assert reply.dev_id == 1
    assert list(reply.registers) == [367, 373]
    register_map = RegisterMap()
    assert [register_map.to_celsius(word) for word in reply.registers] == [36.7, 37.3]


def test_reply_encodes_to_golden_frame() -> None:
    reply = ReadHoldingRegistersResponse(registers=[367, 373], dev_id=1)
    assert server_framer().buildFrame(reply) == golden("reply 36.7 and 37.3 (x0.1)")


def test_exception_frame_both_ways() -> None:
    frame = golden("exception, illegal data address")
    _, decoded = client_framer().handleFrame(frame, 1, 0)
    assert isinstance(decoded, ExceptionResponse)
    assert decoded.function_code == 0x83
    assert decoded.exception_code == 0x02
    assert server_framer().buildFrame(ExceptionResponse(0x03, 0x02, device_id=1)) == frame


def test_pulse_echo_keeps_the_raw_value() -> None:
    _, echo = client_framer().handleFrame(golden("pulse relay 1 for 700 ms"), 1, 0)
    assert isinstance(echo, RawCoilWrite)
    assert (echo.address, echo.value) == (0x0200, 7)


@pytest.mark.parametrize("name", ["reply 36.7 and 37.3 (x0.1)", "exception, illegal data address"])
def test_reply_fed_one_byte_at_a_time(name: str) -> None:
    frame = golden(name)
    framer = client_framer()
    for end in range(1, len(frame)):
        used, decoded = framer.handleFrame(frame[:end], 1, 0)
        assert (used, decoded) == (0, None), end
    used, decoded = framer.handleFrame(frame, 1, 0)
    assert decoded is not None
    assert used == len(frame)


def test_reply_with_trailing_bytes_still_decodes() -> None:
    frame = golden("reply 36.7 and 37.3 (x0.1)")
    _, decoded = client_framer().handleFrame(frame + b"\x00\x01", 1, 0)
    assert isinstance(decoded, ReadHoldingRegistersResponse)
    assert list(decoded.registers) == [367, 373]


def test_corrupted_crc_is_dropped_not_decoded() -> None:
    frame = bytearray(golden("reply 36.7 and 37.3 (x0.1)"))
    frame[-1] ^= 0xFF
    used, decoded = client_framer().handleFrame(bytes(frame), 1, 0)
    assert decoded is None
    assert used == len(frame)


def test_garbage_before_a_reply_costs_that_reply() -> None:
    """pymodbus 3.16's RTU framer drops the whole buffer when a candidate frame
    fails its CRC, so garbage in front of a reply loses the reply too. The bus
    recovers by retrying the request (tests/integration/test_modbus_bus.py)."""
    frame = golden("reply 36.7 and 37.3 (x0.1)")
    used, decoded = client_framer().handleFrame(b"\x00" + frame, 1, 0)
    assert decoded is None
    assert used == len(frame) + 1


def test_reply_from_another_slave_is_skipped() -> None:
    _, decoded = client_framer().handleFrame(golden("reply 36.7 and 37.3 (x0.1)"), 2, 0)
    assert decoded is None


# -- CRC-16/MODBUS ------------------------------------------------------------


def test_crc_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_frame_has_zero_residue(name: str) -> None:
    assert crc16_modbus(golden(name)) == 0x0000


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_crc_is_sent_low_byte_first(name: str) -> None:
    frame = golden(name)
    assert frame[-2:] == crc16_modbus(frame[:-2]).to_bytes(2, "little")


@given(st.binary(max_size=256))
@example(b"")
@example(b"\x01\x03\x00\x00\x00\x02")
def test_residue_of_any_frame_with_its_crc_is_zero(data: bytes) -> None:
    frame = data + crc16_modbus(data).to_bytes(2, "little")
    assert crc16_modbus(frame) == 0x0000


@given(st.binary(min_size=1, max_size=256))
def test_pymodbus_crc_agrees_with_ours(data: bytes) -> None:
    # pymodbus returns the CRC byte-swapped (high byte = first byte on the wire).
    ours = crc16_modbus(data)
    assert FramerRTU.compute_CRC(data) == int.from_bytes(ours.to_bytes(2, "little"), "big")


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0), st.integers(1, 255))
def test_any_single_byte_error_is_detected(data: bytes, position: int, flip: int) -> None:
    frame = bytearray(data + crc16_modbus(data).to_bytes(2, "little"))
    frame[position % len(frame)] ^= flip
    assert crc16_modbus(frame) != 0x0000
