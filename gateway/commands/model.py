"""The remote-command wire format and its configuration (CONTRACT.md, "Commands").

This module owns everything about a command that needs no I/O:

- the contract strings: ``CommandStatus`` and ``RejectReason``;
- ``CommandMessage``, the pydantic model of one inbound command, validated
  strictly (no coercion: ``"1"`` is not ``1``, ``true`` is not ``1``);
- per-action parameter models (``door.open``, ``door.set_mode``,
  ``gateway.ping``), so a driver only ever sees checked parameters;
- ``VerifiedCommand``, the frozen dataclass passed inward once a command has
  passed every check, and ``CommandRejected``, the error carrying the reason;
- ``CommandResult`` and its JSON for ``{root}/commands/results``;
- ``canonical_bytes``, the one canonical form that both signing
  (``gateway.cli.operator_tools``) and verification (``gateway.commands.verify``) use;
- ``CommandsConfig``, the ``commands:`` section of the configuration.

Timestamps on the wire are RFC 3339 UTC: ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z``.
Parsing is strict: upper-case ``T`` and ``Z`` only, no offsets, no
``+00:00``, no leap seconds. We emit milliseconds (``.123Z``) as the contract says.

Longer than 400 lines because it is the whole command wire format (contract strings,
message, parameters, results, canonical bytes, config) with the validators that make it
strict; none of it does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from drivers.actions import (
    HOLD_SECONDS_DEFAULT,
    HOLD_SECONDS_MAX,
    HOLD_SECONDS_MIN,
    DeviceAction,
    DoorModeName,
    DoorOpen,
    OtherAction,
    Ping,
    SetDoorMode,
)
from gateway.outbox.wire import result_json
from gateway.timefmt import rfc3339

if TYPE_CHECKING:
    # Only signers (operator tools, the platform's side, tests) hold a private key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Ids and names that end up in logs, results and the audit table: printable
# ASCII only, so a hostile payload cannot inject control characters anywhere.
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
NAME_PATTERN = r"^[a-z0-9-]{1,64}$"  # CONTRACT.md: site, gateway and device ids
ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ACTION_MAX_LEN = 64

ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64

# How deep ``params`` may nest: the contract's actions take flat objects; the
# bound keeps hostile nesting out of the canonical encoder and the drivers.
MAX_PARAMS_DEPTH = 4

_RFC3339_UTC = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z$", re.ASCII
)
_COMMAND_ID_RE = re.compile(COMMAND_ID_PATTERN, re.ASCII)
_NAME_RE = re.compile(NAME_PATTERN, re.ASCII)


class CommandStatus(StrEnum):
    """``status`` of a command result (CONTRACT.md)."""

    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"


class RejectReason(StrEnum):
    """``reason`` of a rejected or failed command, in the contract's order."""

    BAD_JSON = "bad_json"
    BAD_SCHEMA = "bad_schema"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_GATEWAY = "wrong_gateway"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    TTL_TOO_LONG = "ttl_too_long"
    REPLAYED = "replayed"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_PERMITTED = "not_permitted"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ERROR = "device_error"
    TIMEOUT = "timeout"


class Action(StrEnum):
    """Actions the contract names. Other action strings may still be permitted
    by configuration and supported by a driver; they get no parameter checks here."""

    DOOR_OPEN = "door.open"
    DOOR_SET_MODE = "door.set_mode"
    GATEWAY_PING = "gateway.ping"


# --- timestamps -------------------------------------------------------------


def parse_rfc3339_utc(value: object) -> datetime:
    """Parse a strict RFC 3339 UTC timestamp (``...Z``) into an aware datetime.

    Raises:
        ValueError: not a string, or not exactly that format, or not a real date.
    """
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 UTC string")
    match = _RFC3339_UTC.fullmatch(value)
    if match is None:
        raise ValueError("must be RFC 3339 UTC, e.g. 2026-11-29T08:00:00.000Z")
    year, month, day, hour, minute, second, fraction = match.groups()
    micros = int((fraction or "0").ljust(6, "0"))
    # datetime() rejects month 13, Feb 30, second 60 with a ValueError.
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC
    )


Rfc3339Utc = Annotated[datetime, BeforeValidator(parse_rfc3339_utc)]


# --- canonical form ---------------------------------------------------------


def canonical_bytes(obj: Mapping[str, Any]) -> bytes:
    """The bytes a command signature covers (CONTRACT.md, "Commands").

    The object without ``sig``, keys sorted at every level, separators ``,``
    and ``:`` with no spaces, non-ASCII kept as UTF-8 (not ``\\u`` escapes).
    Numbers are written as Python's ``json`` writes them (``5``, ``1.5``), so a
    signer in another language should send integers or shortest-form floats.

    Raises:
        ValueError: NaN/Infinity, or a string holding a lone surrogate, which
            has no UTF-8 form (``UnicodeEncodeError`` is a ``ValueError``).
        RecursionError: absurd nesting (callers bound depth first).
    """
    unsigned = {key: value for key, value in obj.items() if key != "sig"}
    text = json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def sign(message: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The message with its ``sig``: base64 Ed25519 over ``canonical_bytes`` of the rest.

    Commands and access-list messages are signed alike; the gateway only verifies.
    """
    unsigned = {k: v for k, v in message.items() if k != "sig"}
    signature = key.sign(canonical_bytes(unsigned))
    return {**unsigned, "sig": base64.b64encode(signature).decode("ascii")}


def json_depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0), counting no further than ``limit + 1``."""
    if isinstance(value, dict):
        children: list[object] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return 0
    if limit < 0:
        return 1
    return 1 + max((json_depth(child, limit - 1) for child in children), default=0)


# --- action parameters ------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DoorOpenParams(_Params):
    hold_seconds: int = Field(
        default=HOLD_SECONDS_DEFAULT,
        ge=HOLD_SECONDS_MIN,
        le=HOLD_SECONDS_MAX,
        description="Seconds the lock stays open.",
    )


class DoorSetModeParams(_Params):
    mode: DoorModeName


class PingParams(_Params):
    """``gateway.ping`` takes no parameters."""


ACTION_PARAMS: Mapping[str, type[_Params]] = {
    Action.DOOR_OPEN: DoorOpenParams,
    Action.DOOR_SET_MODE: DoorSetModeParams,
    Action.GATEWAY_PING: PingParams,
}


# --- the inbound command ----------------------------------------------------


class CommandMessage(BaseModel):
    """One inbound command as it arrives on ``{root}/commands`` (schema only).

    Unknown fields are rejected (``bad_schema``): the contract lists them all,
    and a field we would ignore must not ride along under a valid signature.
    For the actions of the contract, ``params`` are checked and completed with
    their defaults (``normalized_params``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Literal[1] would let true and 1.0 through (they compare equal to 1).
    v: int = Field(ge=1, le=1, description="Contract version; exactly the integer 1.")
    id: str = Field(pattern=COMMAND_ID_PATTERN)
    gateway: str = Field(pattern=NAME_PATTERN)
    action: str = Field(pattern=ACTION_PATTERN, max_length=ACTION_MAX_LEN)
    device: str = Field(pattern=NAME_PATTERN)
    params: dict[str, Any]
    issued_at: Rfc3339Utc
    expires_at: Rfc3339Utc
    key_id: str = Field(pattern=KEY_ID_PATTERN)
    sig: str = Field(max_length=128, description="Base64 of the 64-byte Ed25519 signature.")

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if json_depth(value, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PARAMS_DEPTH} levels")
        return value

    @field_validator("sig")
    @classmethod
    def _sig_is_base64(cls, value: str) -> str:
        decode_signature(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> CommandMessage:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        model = ACTION_PARAMS.get(self.action)
        if model is not None:
            model.model_validate(self.params)  # raises ValidationError -> bad_schema
        return self

    @property
    def signature(self) -> bytes:
        return decode_signature(self.sig)

    def device_action(self) -> DeviceAction:
        """The typed action a driver receives, defaults filled in (``DoorOpen(hold_seconds=5)``).

        Validation already ran (``_check``), so building it cannot fail.
        """
        model = ACTION_PARAMS.get(self.action)
        if model is None:
            return OtherAction(self.action, dict(self.params))
        params = model.model_validate(self.params)
        if isinstance(params, DoorOpenParams):
            return DoorOpen(hold_seconds=params.hold_seconds)
        if isinstance(params, DoorSetModeParams):
            return SetDoorMode(mode=params.mode)
        return Ping()


def decode_signature(value: str) -> bytes:
    """Decode a base64 Ed25519 signature.

    Raises:
        ValueError: not strict base64, or not 64 bytes.
    """
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("sig must be base64") from exc
    if len(raw) != ED25519_SIGNATURE_BYTES:
        raise ValueError(f"sig must decode to {ED25519_SIGNATURE_BYTES} bytes")
    return raw


def salvage_id(obj: object) -> str | None:
    """The ``id`` of a payload that failed validation, if it is a well-formed id.

    A malformed id is not echoed back: results and logs carry only ids that
    match ``COMMAND_ID_PATTERN``.
    """
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, str) and _COMMAND_ID_RE.fullmatch(value):
            return value
    return None


def salvage_device(obj: object) -> str | None:
    """The ``device`` of a payload that failed validation, if it is a well-formed id."""
    if isinstance(obj, dict):
        value = obj.get("device")
        if isinstance(value, str) and _NAME_RE.fullmatch(value):
            return value
    return None


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command that passed every check of ``CommandVerifier``: safe to run."""

    id: str
    action: str
    device: str
    params: DeviceAction  # validated once, here; the driver checks nothing again
    key_id: str
    issued_at: float  # wall seconds
    expires_at: float  # wall seconds


class CommandRejected(Exception):
    """A command failed a check; ``reason`` is the first that failed.

    Whatever could be read from the payload rides along for the result and the
    audit log. ``expires_at`` is set once the signature verified, so the id can
    be remembered as used (``unknown_device`` / ``not_permitted``).
    """

    def __init__(
        self,
        reason: RejectReason,
        detail: str = "",
        *,
        command_id: str | None = None,
        device: str | None = None,
        action: str | None = None,
        key_id: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        self.device = device
        self.action = action
        self.key_id = key_id
        self.expires_at = expires_at


# --- the result --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of one command, for ``{root}/commands/results``.

    ``at`` is wall seconds; ``latency_ms`` is None only when unknown (a command
    found unfinished after a restart).
    """

    id: str | None
    status: CommandStatus
    reason: RejectReason | None
    device: str | None
    at: float
    latency_ms: float | None

    def to_json(self) -> bytes:
        """UTF-8 JSON of the result, as CONTRACT.md shows it."""
        return result_json(
            command_id=self.id,
            status=self.status.value,
            reason=None if self.reason is None else self.reason.value,
            device=self.device,
            at=rfc3339(self.at),
            latency_ms=self.latency_ms,
        )


# --- configuration -------------------------------------------------------------


def decode_public_key(value: str) -> bytes:
    """Decode a configured public key: base64 of the raw 32-byte Ed25519 key.

    Raises:
        ValueError: with a message fit for ``check-config``.
    """
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(
            "must be the base64 of a raw 32-byte Ed25519 public key "
            "(the line printed by `keygen`), not a PEM file"
        ) from exc
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ValueError(
            f"decodes to {len(raw)} bytes; a raw Ed25519 public key is "
            f"{ED25519_PUBLIC_KEY_BYTES} bytes (use the line printed by `keygen`)"
        )
    return raw


KeyId = Annotated[str, Field(pattern=KEY_ID_PATTERN)]
DeviceId = Annotated[str, Field(pattern=NAME_PATTERN)]
ActionName = Annotated[str, Field(pattern=ACTION_PATTERN, max_length=ACTION_MAX_LEN)]


class DevicePermission(BaseModel):
    """Which actions may be asked of one device, and by which keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: frozenset[ActionName] = Field(
        min_length=1, description="Actions allowed on this device, e.g. door.open."
    )
    key_ids: frozenset[KeyId] = Field(
        min_length=1, description="Keys (names in public_keys) allowed to ask for them."
    )


class CommandsConfig(BaseModel):
    """The ``commands:`` section: who may command what, and the time rules.

    Anything not granted in ``permissions`` is denied. ``gateway.ping`` is
    addressed to the gateway itself: its ``device`` is the gateway's own id,
    so grant it under that id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_keys: dict[KeyId, str] = Field(
        default_factory=dict,
        description="Platform verification keys by key_id: base64 of the raw 32-byte "
        "Ed25519 public key (as printed by `keygen`). No private key lives on the gateway.",
    )
    max_ttl_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest allowed expires_at - issued_at, s."
    )
    skew_s: float = Field(
        default=30.0, ge=0, le=600, description="Tolerated clock skew before issued_at, s."
    )
    max_payload_bytes: int = Field(
        default=8192,
        ge=1024,
        le=65536,
        description="Larger command payloads are rejected (bad_json) before parsing.",
    )
    execute_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Longest a device may take to carry out a command."
    )
    unverified_report_s: float = Field(
        default=60,
        ge=0.1,
        le=3600,
        description="Messages failing before their signature verifies are summed up in one "
        "audit.command reading this often.",
    )
    audit_retention_days: float = Field(
        default=90, gt=0, le=3650, description="Audit rows older than this are pruned."
    )
    audit_max_rows: int = Field(
        default=200_000,
        ge=1000,
        description="Size cap of the audit log: beyond this many rows the oldest are pruned.",
    )
    permissions: dict[DeviceId, DevicePermission] = Field(
        default_factory=dict,
        description="Per device id (or the gateway id, for gateway.ping): allowed actions "
        "and the key_ids allowed to ask for them.",
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_decode(cls, value: dict[str, str]) -> dict[str, str]:
        for key_id, encoded in value.items():
            try:
                decode_public_key(encoded)
            except ValueError as exc:
                raise ValueError(f"public key {key_id!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _grants_name_known_keys(self) -> CommandsConfig:
        for device, permission in self.permissions.items():
            unknown = sorted(permission.key_ids - self.public_keys.keys())
            if unknown:
                raise ValueError(
                    f"permissions.{device}.key_ids names keys missing from public_keys: "
                    + ", ".join(unknown)
                )
        return self

    def public_key_bytes(self) -> dict[str, bytes]:
        """The configured keys, decoded (validation guarantees they decode)."""
        return {key_id: decode_public_key(value) for key_id, value in self.public_keys.items()}
