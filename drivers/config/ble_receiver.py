"""The BLE band receiver's configuration (``kind: ble_receiver``): no driver, no serial port."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from drivers.config.serial import SerialDeviceConfig, serial_transport_field
from drivers.masking import mask as mask_identifier
from drivers.transports.config import SerialTransportConfig

DEFAULT_BAUDRATE = 115200
"""PROTOCOLS.md: the receiver prints at 115200 8N1."""


_MAC_RE = re.compile(r"[0-9A-F]{12}")


_WEARER_RE = re.compile(r"[a-z0-9-]{1,64}")


def mask(text: str) -> str:
    """Partly mask an identifier for DEBUG logs: ``A4C1******01``."""
    return mask_identifier(text, head=4, tail=2)


def normalise_mac(value: str) -> str:
    """``a4:c1:38:00:00:01`` or ``a4c138000001`` -> ``A4C138000001``.

    Raises:
        ValueError: not 12 hex digits.
    """
    mac = value.replace(":", "").replace("-", "").upper()
    if not _MAC_RE.fullmatch(mac):
        raise ValueError(f"not a MAC address (12 hex digits): {mask(value)}")
    return mac


class BleReceiverConfig(SerialDeviceConfig):
    """A BLE receiver (``ble-gprp-v1``) and the wearables it watches."""

    DEFAULT_BAUDRATE = DEFAULT_BAUDRATE
    kind: Literal["ble_receiver"]
    transport: SerialTransportConfig = serial_transport_field(
        DEFAULT_BAUDRATE, "Serial line; baudrate defaults to 115200 for this kind."
    )
    wearers: dict[str, str] = Field(
        default_factory=dict,
        description="Band MAC (12 hex digits, any case, colons allowed) -> wearer id "
        "(the band's device id). Beacons of other MACs are dropped.",
    )
    sos_holdoff_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="iBS01 bands: button advertisements within this time of the last SOS "
        "are the same press (also bounds how long a BTHome packet id is remembered).",
    )
    fall_holdoff_s: float = Field(
        default=30.0, gt=0, le=3600, description="iBS01 bands: the same for falls."
    )
    vitals_interval_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="At most one wearable.vitals per wearer in this many seconds.",
    )
    absent_after_s: float = Field(
        default=900.0,
        gt=0,
        le=86_400,
        description="A band unheard this long is reported absent.",
    )
    silent_offline_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="The receiver is offline when it has printed nothing for this long.",
    )

    @field_validator("wearers", mode="after")
    @classmethod
    def _normalise_wearers(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for raw, wearer in value.items():
            mac = normalise_mac(raw)
            if mac in out:
                raise ValueError(f"band {mask(mac)} listed twice")
            if not _WEARER_RE.fullmatch(wearer):
                raise ValueError("wearer ids must match [a-z0-9-]{1,64}")
            out[mac] = wearer
        if len(set(out.values())) != len(out):
            raise ValueError("each wearer id names one band: ids must be unique")
        return out
