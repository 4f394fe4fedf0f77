"""CRC-16 variants used by the wire protocols (PROTOCOLS.md).

- CRC-16/MCRF4XX (Chafon UHF readers, PROTOCOLS.md "UHF RFID reader"): init
  0xFFFF, reflected polynomial 0x8408, no final XOR; check value of
  ``b"123456789"`` is 0x6F91.
- CRC-16/MODBUS (PROTOCOLS.md "Common: Modbus RTU"): init 0xFFFF, reflected
  polynomial 0xA001, no final XOR; check value 0x4B37.

Both are sent low byte first, so a whole frame including its CRC has residue
0x0000. Pure functions, table-driven (one lookup per byte), stdlib only.
"""

from __future__ import annotations

__all__ = ["crc16_mcrf4xx", "crc16_modbus"]

_INIT = 0xFFFF


def _make_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MCRF4XX_TABLE = _make_table(0x8408)
_MODBUS_TABLE = _make_table(0xA001)


def crc16_mcrf4xx(data: bytes | bytearray | memoryview, crc: int = _INIT) -> int:
    """CRC-16/MCRF4XX of ``data``; pass a previous result as ``crc`` to continue."""
    table = _MCRF4XX_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_modbus(data: bytes | bytearray | memoryview, crc: int = _INIT) -> int:
    """CRC-16/MODBUS of ``data``; pass a previous result as ``crc`` to continue."""
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc
