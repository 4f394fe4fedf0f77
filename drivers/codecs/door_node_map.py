"""The ``door-node-v1`` register map as typed data (PROTOCOLS.md, "Door node").

A door node is two Modbus RTU slaves on one RS-485 bus:

- a relay/input board (Waveshare "Modbus RTU Relay (D)" compatible), default
  slave 1: relays 1..8 on coils 0x0000..0x0007 (FC01/FC05, FF00 on, 0000 off),
  "pulse relay n+1 on for value x 100 ms" as FC05 to 0x0200+n (the reply echoes
  the request), door contact on discrete input 0x0000 (1 = open) and exit
  button on discrete input 0x0001 (1 = pressed), both FC02;
- a card reader (Inveo "RFID IND Modbus" compatible), default slave 2: coil
  1016 "new card waiting" (FC01 read, FC05 write 0 to re-arm), the card id in
  holding registers 1002..1011 (FC03), accept / reject beeps on coils 1014 /
  1015 (FC05 write 1).

Card id layout (our profile's choice): the 20 bytes of the ten registers,
big-endian, the id right-aligned and zero-padded on the left. The id is the
significant bytes as upper-case hex (``04A1B2C3``); all zeros is not a card.
Leading zero bytes of an id are therefore indistinguishable from padding and
are never part of the reported id.

This module is pure and uses the stdlib only: it names addresses and builds
the requests a driver sends (``ModbusRequest``), so that tests can compare
them byte for byte with the golden frames. It does no I/O and computes no CRC
(the RTU framing belongs to the transport).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from drivers.codecs.errors import ProtocolError

PROFILE = "door-node-v1"

DEFAULT_RELAY_SLAVE = 1
DEFAULT_READER_SLAVE = 2

RELAY_COUNT = 8
RELAY_COIL_BASE = 0x0000
PULSE_ADDRESS_BASE = 0x0200
PULSE_UNIT_MS = 100
"""One unit of the pulse value is 100 ms (PROTOCOLS.md)."""
PULSE_TENTHS_MAX = 0xFFFF
"""The pulse value is one 16-bit register value."""

DOOR_CONTACT_INPUT = 0x0000
EXIT_BUTTON_INPUT = 0x0001
DOOR_INPUT_COUNT = 2

NEW_CARD_COIL = 1016
CARD_ID_REGISTER = 1002
CARD_ID_REGISTER_COUNT = 10
CARD_ID_BYTES = 2 * CARD_ID_REGISTER_COUNT
ACCEPT_BEEP_COIL = 1014
REJECT_BEEP_COIL = 1015

COIL_ON = 0xFF00
COIL_OFF = 0x0000

_MAX_SLAVE = 247
_MAX_WORD = 0xFFFF


class FunctionCode(IntEnum):
    """The Modbus function codes a door node uses."""

    READ_COILS = 0x01
    READ_DISCRETE_INPUTS = 0x02
    READ_HOLDING_REGISTERS = 0x03
    WRITE_SINGLE_COIL = 0x05


class DoorNodeMapError(ProtocolError):
    """A value that does not fit the door-node-v1 map (bad card id, relay, pulse)."""


@dataclass(frozen=True, slots=True)
class ModbusRequest:
    """One request of the door node: slave, function, address and value or count.

    ``value`` is the quantity for reads and the 16-bit value for FC05 (FF00 or
    0000 for a coil, the pulse length in tenths for a pulse address).
    """

    slave: int
    function: FunctionCode
    address: int
    value: int

    def __post_init__(self) -> None:
        if not 1 <= self.slave <= _MAX_SLAVE:
            raise DoorNodeMapError(f"slave id {self.slave} out of range 1..{_MAX_SLAVE}")
        if not 0 <= self.address <= _MAX_WORD:
            raise DoorNodeMapError(f"address {self.address} out of range")
        if not 0 <= self.value <= _MAX_WORD:
            raise DoorNodeMapError(f"value {self.value} out of range")

    def encode(self) -> bytes:
        """The RTU frame without its CRC: slave, function, address, value (big-endian)."""
        return (
            bytes((self.slave, self.function))
            + self.address.to_bytes(2, "big")
            + self.value.to_bytes(2, "big")
        )


def pulse_address(relay: int) -> int:
    """The FC05 address that pulses ``relay`` (1-based): 0x0200 + (relay - 1).

    Raises:
        DoorNodeMapError: relay outside 1..8.
    """
    _check_relay(relay)
    return PULSE_ADDRESS_BASE + relay - 1


def relay_coil(relay: int) -> int:
    """The coil that holds ``relay`` (1-based) on or off.

    Raises:
        DoorNodeMapError: relay outside 1..8.
    """
    _check_relay(relay)
    return RELAY_COIL_BASE + relay - 1


def pulse_tenths(duration_ms: int) -> int:
    """The pulse value for a duration, rounded up to whole 100 ms units.

    Raises:
        DoorNodeMapError: a duration that is not positive or does not fit 16 bits.
    """
    if duration_ms <= 0:
        raise DoorNodeMapError(f"pulse of {duration_ms} ms is not positive")
    tenths = -(-duration_ms // PULSE_UNIT_MS)
    if tenths > PULSE_TENTHS_MAX:
        raise DoorNodeMapError(f"pulse of {duration_ms} ms does not fit the pulse register")
    return tenths


def _check_relay(relay: int) -> None:
    if not 1 <= relay <= RELAY_COUNT:
        raise DoorNodeMapError(f"relay {relay} out of range 1..{RELAY_COUNT}")


def decode_card_id(registers: Sequence[int]) -> str | None:
    """The card id in the ten card registers, or None when they are all zero.

    Raises:
        DoorNodeMapError: not exactly ten registers, or a value outside 16 bits.
    """
    if len(registers) != CARD_ID_REGISTER_COUNT:
        raise DoorNodeMapError(
            f"card id needs {CARD_ID_REGISTER_COUNT} registers, got {len(registers)}"
        )
    raw = bytearray()
    for value in registers:
        if not 0 <= value <= _MAX_WORD:
            raise DoorNodeMapError(f"register value {value} out of range")
        raw += value.to_bytes(2, "big")
    significant = bytes(raw).lstrip(b"\x00")
    return significant.hex().upper() if significant else None


def encode_card_id(card: str) -> tuple[int, ...]:
    """The ten register values that carry ``card`` (hex), as a reader presents it.

    Raises:
        DoorNodeMapError: not hex, an odd number of digits, longer than 20
            bytes, or all zeros.
    """
    try:
        raw = bytes.fromhex(card)
    except ValueError as exc:
        raise DoorNodeMapError(f"card id is not hex: {card!r}") from exc
    if len(card) % 2:
        raise DoorNodeMapError("card id has an odd number of hex digits")
    if len(raw) > CARD_ID_BYTES:
        raise DoorNodeMapError(f"card id longer than {CARD_ID_BYTES} bytes")
    if not raw.strip(b"\x00"):
        raise DoorNodeMapError("an all-zero card id is not a card")
    padded = raw.rjust(CARD_ID_BYTES, b"\x00")
    return tuple(int.from_bytes(padded[i : i + 2], "big") for i in range(0, CARD_ID_BYTES, 2))


@dataclass(frozen=True, slots=True)
class DoorNodeMap:
    """The addresses of one door node, with its configurable slave ids and lock relay.

    Each method returns the request the driver sends for one step, so the
    driver and the golden-frame tests use the same numbers.
    """

    relay_slave: int = DEFAULT_RELAY_SLAVE
    reader_slave: int = DEFAULT_READER_SLAVE
    lock_relay: int = 1

    def __post_init__(self) -> None:
        for slave in (self.relay_slave, self.reader_slave):
            if not 1 <= slave <= _MAX_SLAVE:
                raise DoorNodeMapError(f"slave id {slave} out of range 1..{_MAX_SLAVE}")
        _check_relay(self.lock_relay)

    def read_door_inputs(self) -> ModbusRequest:
        """FC02: the door contact and the exit button in one read."""
        return ModbusRequest(
            self.relay_slave,
            FunctionCode.READ_DISCRETE_INPUTS,
            DOOR_CONTACT_INPUT,
            DOOR_INPUT_COUNT,
        )

    def read_relays(self) -> ModbusRequest:
        """FC01: the eight relay coils."""
        return ModbusRequest(
            self.relay_slave, FunctionCode.READ_COILS, RELAY_COIL_BASE, RELAY_COUNT
        )

    def pulse_lock(self, tenths: int) -> ModbusRequest:
        """FC05 to the pulse address of the lock relay: on for ``tenths`` x 100 ms."""
        return ModbusRequest(
            self.relay_slave, FunctionCode.WRITE_SINGLE_COIL, pulse_address(self.lock_relay), tenths
        )

    def hold_lock(self, on: bool) -> ModbusRequest:
        """FC05 FF00 / 0000 to the lock relay's coil (``open`` mode holds it on)."""
        return ModbusRequest(
            self.relay_slave,
            FunctionCode.WRITE_SINGLE_COIL,
            relay_coil(self.lock_relay),
            COIL_ON if on else COIL_OFF,
        )

    def poll_new_card(self) -> ModbusRequest:
        """FC01: the reader's "new card waiting" coil."""
        return ModbusRequest(self.reader_slave, FunctionCode.READ_COILS, NEW_CARD_COIL, 1)

    def read_card_id(self) -> ModbusRequest:
        """FC03: the ten card id registers."""
        return ModbusRequest(
            self.reader_slave,
            FunctionCode.READ_HOLDING_REGISTERS,
            CARD_ID_REGISTER,
            CARD_ID_REGISTER_COUNT,
        )

    def rearm(self) -> ModbusRequest:
        """FC05: write coil 1016 = 0 so the reader takes the next card."""
        return ModbusRequest(
            self.reader_slave, FunctionCode.WRITE_SINGLE_COIL, NEW_CARD_COIL, COIL_OFF
        )

    def beep(self, accept: bool) -> ModbusRequest:
        """FC05: write 1 to the accept (1014) or reject (1015) beep coil."""
        coil = ACCEPT_BEEP_COIL if accept else REJECT_BEEP_COIL
        return ModbusRequest(self.reader_slave, FunctionCode.WRITE_SINGLE_COIL, coil, COIL_ON)
