"""The Chafon UHF reader's configuration (``kind: uhf_reader``): no driver, no serial port."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.config.serial import SerialDeviceConfig, serial_transport_field
from drivers.transports.config import SerialTransportConfig

DEFAULT_BAUDRATE = 57600
"""PROTOCOLS.md: Chafon readers default to 57600 8N1."""


CHAFON_BAUDRATES = (9600, 19200, 38400, 57600, 115200)
"""Rates the reader's own baud command (0x28) can select."""


class UhfReaderConfig(SerialDeviceConfig):
    """A Chafon UHF reader (``chafon-uhf-v1``) on a serial line."""

    DEFAULT_BAUDRATE = DEFAULT_BAUDRATE
    kind: Literal["uhf_reader"]
    transport: SerialTransportConfig = serial_transport_field(
        DEFAULT_BAUDRATE,
        "Serial line; baudrate defaults to 57600 for this kind (the reader's "
        "factory setting), 8N1.",
    )
    address: int = Field(
        default=0x00, ge=0, le=0xFF, description="Reader address (0xFF = broadcast)."
    )
    mode: Literal["answer", "scan"] = Field(
        default="answer",
        description="answer: the gateway polls inventory; scan: the reader pushes each tag.",
    )
    poll_interval_ms: int = Field(
        default=200, ge=20, le=60_000, description="Pause between inventories (answer mode)."
    )
    reply_timeout_ms: int = Field(
        default=1500,
        ge=50,
        le=30_000,
        description="Wait for a reply; an inventory takes up to the reader's ScanTime "
        "(default 1 s).",
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Resends, at once, of a request whose reply came garbled (bytes heard, "
        "then quiet, no valid frame): line noise must not leave the reader unasked for a "
        "whole reply timeout while a bike goes by.",
    )
    collapse_window_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Reads of one EPC closer than this collapse into one ebike.pass, emitted "
        "this long after the tag was last seen.",
    )
    max_pass_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A tag seen continuously this long (a bike parked at the gate) is "
        "reported and a new pass starts.",
    )
    tag_time_s: int = Field(
        default=0,
        ge=0,
        le=255,
        description="Scan mode Tag_Time: the reader pushes one tag at most once per this "
        "many seconds (0 = every read).",
    )
    antenna: int = Field(default=1, ge=1, le=255, description="Antenna number reported.")
    offline_after_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Offline when nothing valid came from the reader for this long.",
    )
    probe_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="Scan mode: probe a quiet reader (get work mode) this often.",
    )

    @model_validator(mode="after")
    def _check(self) -> UhfReaderConfig:
        t = self.transport
        if t.baudrate not in CHAFON_BAUDRATES:
            raise ValueError(
                f"transport.baudrate {t.baudrate} is not one a Chafon reader supports "
                f"{CHAFON_BAUDRATES}; the factory default is 57600"
            )
        if t.parity != "N" or t.stopbits != 1:
            raise ValueError("Chafon readers speak 8N1: set parity N and stopbits 1")
        if self.offline_after_s * 1000 <= self.reply_timeout_ms:
            raise ValueError("offline_after_s must be longer than reply_timeout_ms")
        if self.mode == "scan" and self.probe_interval_s >= self.offline_after_s:
            raise ValueError("probe_interval_s must be shorter than offline_after_s")
        return self
