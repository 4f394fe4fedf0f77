"""CRC-16/MCRF4XX and CRC-16/MODBUS (PROTOCOLS.md) against check values,
the golden frames, and a bit-by-bit reference implementation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codecs.crc import crc16_mcrf4xx, crc16_modbus

CHAFON_GOLDEN = [
    "04 00 01 DB 4B",
    "04 FF 01 1B B4",
    "04 00 21 D9 6A",
    "05 00 01 FB F2 3D",
    "13 00 01 01 01 0C E2 00 00 17 22 11 00 88 15 20 AB CD 41 D8",
    "11 00 EE 00 E2 00 00 17 22 11 00 88 15 20 AB CD 96 87",
    "0A 00 35 01 02 04 00 01 00 56 F5",
    "0A 00 35 00 00 00 00 00 00 C1 8C",
]
MODBUS_GOLDEN = [
    "01 03 00 00 00 02 C4 0B",
    "01 03 04 01 6F 01 75 0B A5",
    "01 03 00 00 00 06 C5 C8",
    "01 06 00 10 01 75 48 78",
    "01 83 02 C0 F1",
    "01 05 02 00 00 07 8D B0",
    "01 05 02 00 00 1E 4C 7A",
    "01 02 00 00 00 08 79 CC",
    "01 02 00 00 00 02 F9 CB",
    "02 01 03 F8 00 01 7C 4C",
    "02 03 03 EA 00 0A E4 4E",
    "02 05 03 F8 00 00 4C 4C",
]


def _reference(data: bytes, poly: int) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc


def test_check_values() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91
    assert crc16_modbus(b"123456789") == 0x4B37
    assert crc16_mcrf4xx(b"") == 0xFFFF
    assert crc16_modbus(b"") == 0xFFFF


@pytest.mark.parametrize("frame", CHAFON_GOLDEN)
def test_chafon_golden(frame: str) -> None:
    data = bytes.fromhex(frame)
    crc = crc16_mcrf4xx(data[:-2])
    assert data[-2:] == bytes((crc & 0xFF, crc >> 8))
    assert crc16_mcrf4xx(data) == 0  # residue of a whole frame


@pytest.mark.parametrize("frame", MODBUS_GOLDEN)
def test_modbus_golden(frame: str) -> None:
    data = bytes.fromhex(frame)
    crc = crc16_modbus(data[:-2])
    assert data[-2:] == bytes((crc & 0xFF, crc >> 8))
    assert crc16_modbus(data) == 0


@given(st.binary(max_size=300))
def test_matches_reference(data: bytes) -> None:
    assert crc16_mcrf4xx(data) == _reference(data, 0x8408)
    assert crc16_modbus(data) == _reference(data, 0xA001)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_incremental(a: bytes, b: bytes) -> None:
    assert crc16_mcrf4xx(b, crc16_mcrf4xx(a)) == crc16_mcrf4xx(a + b)
    assert crc16_modbus(b, crc16_modbus(a)) == crc16_modbus(a + b)


def test_accepts_bytearray_and_memoryview() -> None:
    data = b"123456789"
    assert crc16_mcrf4xx(bytearray(data)) == crc16_mcrf4xx(memoryview(data)) == 0x6F91
