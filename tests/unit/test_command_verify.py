"""CommandVerifier: every rejection reason, their order, and hostile payloads.

Longer than 400 lines because each rejection reason of the contract gets its own test,
in the contract's order, plus the hostile payloads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.actions import DoorOpen, OtherAction, Ping
from gateway.cli.operator_tools import build_command, public_key_b64
from gateway.commands.model import (
    CommandRejected,
    CommandsConfig,
    RejectReason,
    VerifiedCommand,
    canonical_bytes,
    sign,
)
from gateway.commands.verify import CommandVerifier
from tests.fakes import FakeClock

GATEWAY = "north-gate-1"
T0 = 1_795_939_200.0  # 2026-11-29T08:00:00Z
PLATFORM_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()  # configured, but granted nothing on the door
STRANGER_KEY = Ed25519PrivateKey.generate()  # not configured


class SeenSet:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def is_seen(self, command_id: str) -> bool:
        return command_id in self.ids


def make_config(**overrides: Any) -> CommandsConfig:
    raw: dict[str, Any] = {
        "public_keys": {
            "platform-2026": public_key_b64(PLATFORM_KEY),
            "other": public_key_b64(OTHER_KEY),
        },
        "permissions": {
            "door-east-1": {
                "actions": ["door.open", "door.set_mode"],
                "key_ids": ["platform-2026"],
            },
            "door-west-1": {"actions": ["door.open"], "key_ids": ["platform-2026", "other"]},
            "display-1": {"actions": ["display.show"], "key_ids": ["platform-2026"]},
            GATEWAY: {"actions": ["gateway.ping"], "key_ids": ["platform-2026"]},
            "lift-1": {"actions": ["lift.call"], "key_ids": ["platform-2026"]},
        },
    }
    raw.update(overrides)
    return CommandsConfig.model_validate(raw)


DEVICE_ACTIONS: Mapping[str, frozenset[str]] = {
    "door-east-1": frozenset({"door.open", "door.set_mode"}),
    # Supports set_mode, but the config grants it door.open only.
    "door-west-1": frozenset({"door.open", "door.set_mode"}),
    "display-1": frozenset({"display.show"}),
    # Granted lift.call in config, but the driver does not support it.
    "lift-1": frozenset({"lift.stop"}),
}


def make_verifier(
    *, now: float = T0 + 1, seen: SeenSet | None = None, config: CommandsConfig | None = None
) -> CommandVerifier:
    return CommandVerifier(
        config or make_config(),
        gateway_id=GATEWAY,
        device_actions=DEVICE_ACTIONS,
        seen=seen or SeenSet(),
        clock=FakeClock(wall=now),
    )


def command(
    *,
    key: Ed25519PrivateKey = PLATFORM_KEY,
    key_id: str = "platform-2026",
    ttl_s: float = 30.0,
    issued_at: float = T0,
    tamper: Callable[[dict[str, Any]], None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A signed command; ``tamper`` edits it after signing."""
    base = build_command(
        command_id=fields.pop("id", "0b7c9a1e-0000-4000-8000-000000000001"),
        gateway=fields.pop("gateway", GATEWAY),
        action=fields.pop("action", "door.open"),
        device=fields.pop("device", "door-east-1"),
        params=fields.pop("params", {"hold_seconds": 5}),
        key_id=key_id,
        issued_at=issued_at,
        ttl_s=ttl_s,
    )
    base.update(fields)
    signed = sign(base, key)
    if tamper is not None:
        tamper(signed)
    return signed


def payload(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def reject(verifier: CommandVerifier, data: bytes) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(data)
    return info.value


# --- the happy path ------------------------------------------------------------


def test_valid_command_verifies_with_defaults_filled_in() -> None:
    verified = make_verifier().verify(payload(command(params={})))
    assert verified == VerifiedCommand(
        id="0b7c9a1e-0000-4000-8000-000000000001",
        action="door.open",
        device="door-east-1",
        params=DoorOpen(hold_seconds=5),
        key_id="platform-2026",
        issued_at=T0,
        expires_at=T0 + 30,
    )


def test_ping_is_addressed_to_the_gateway_itself() -> None:
    verified = make_verifier().verify(
        payload(command(action="gateway.ping", device=GATEWAY, params={}))
    )
    assert verified.device == GATEWAY
    assert verified.params == Ping()


def test_key_order_of_the_payload_does_not_matter() -> None:
    obj = command()
    reordered = dict(reversed(list(obj.items())))
    assert make_verifier().verify(payload(reordered)).id == obj["id"]


# --- one test per reason ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"id": "\xe9"}', id="latin1"),
        pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
        pytest.param(b'{"v": NaN}', id="nan"),
        pytest.param(b'{"v": Infinity}', id="infinity"),
        pytest.param(b'{"v": 1, "v": 1}', id="duplicate-key"),
        pytest.param(b'{"id": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b"[" * 6000 + b"]" * 6000, id="deep-array"),
        pytest.param(b'{"a":' * 1500 + b"1" + b"}" * 1500, id="deep-object"),
        pytest.param(b"1" * 5000, id="huge-int"),
    ],
)
def test_bad_json(data: bytes) -> None:
    rejected = reject(make_verifier(), data)
    assert rejected.reason is RejectReason.BAD_JSON
    assert rejected.command_id is None


@pytest.mark.parametrize("data", [b"[1, 2, 3]", b'"a string"', b"null", b"5", b"true"])
def test_valid_json_that_is_not_an_object_is_bad_schema(data: bytes) -> None:
    # CONTRACT.md's order: the JSON is valid, its shape is not.
    rejected = reject(make_verifier(), data)
    assert rejected.reason is RejectReason.BAD_SCHEMA
    assert rejected.command_id is None


def test_oversize_payload_is_bad_json_before_parsing() -> None:
    config = make_config(max_payload_bytes=1024)
    obj = command(params={"hold_seconds": 5})
    obj["pad"] = "x" * 2000
    rejected = reject(make_verifier(config=config), payload(obj))
    assert rejected.reason is RejectReason.BAD_JSON
    assert rejected.command_id is None  # never parsed, so nothing salvaged
    # A payload exactly at the cap is parsed.
    at_cap = b" " * (1024 - 2) + b"{}"
    assert reject(make_verifier(config=config), at_cap).reason is RejectReason.BAD_SCHEMA


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj.pop(field)


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj.__setitem__(field, value)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_drop("sig"), id="no-sig"),
        pytest.param(_drop("params"), id="no-params"),
        pytest.param(_set("v", 2), id="v2"),
        pytest.param(_set("v", True), id="v-true"),
        pytest.param(_set("v", 1.0), id="v-float"),
        pytest.param(_set("v", "1"), id="v-string"),
        pytest.param(_set("gateway", "North Gate"), id="gateway-pattern"),
        pytest.param(_set("gateway", GATEWAY + "\n"), id="gateway-trailing-newline"),
        pytest.param(_set("device", None), id="device-null"),
        pytest.param(_set("action", "open the door"), id="action-pattern"),
        pytest.param(_set("params", [1]), id="params-list"),
        pytest.param(_set("params", {"hold_seconds": 31}), id="hold-too-long"),
        pytest.param(_set("params", {"hold_seconds": 0}), id="hold-zero"),
        pytest.param(_set("params", {"hold_seconds": "5"}), id="hold-string"),
        pytest.param(_set("params", {"hold_seconds": 5.0}), id="hold-float"),
        pytest.param(_set("params", {"hold_seconds": True}), id="hold-bool"),
        pytest.param(_set("params", {"hold": 5}), id="unknown-param"),
        pytest.param(_set("issued_at", "2026-11-29T08:00:00+00:00"), id="offset-not-z"),
        pytest.param(_set("issued_at", "2026-11-29 08:00:00.000Z"), id="space"),
        pytest.param(_set("issued_at", "2026-11-29t08:00:00.000z"), id="lower-case"),
        pytest.param(_set("issued_at", "2026-02-30T08:00:00.000Z"), id="no-such-day"),
        pytest.param(_set("issued_at", 1795939200), id="epoch-number"),
        pytest.param(_set("expires_at", "2026-11-29T07:59:59.000Z"), id="expires-first"),
        pytest.param(_set("sig", "not base64!"), id="sig-not-base64"),
        pytest.param(_set("sig", base64.b64encode(b"x" * 10).decode()), id="sig-short"),
        pytest.param(_set("sig", 12), id="sig-number"),
        pytest.param(_set("extra", "field"), id="unknown-field"),
        pytest.param(_set("key_id", ""), id="empty-key-id"),
    ],
)
def test_bad_schema(tamper: Callable[[dict[str, Any]], None]) -> None:
    rejected = reject(make_verifier(), payload(command(tamper=tamper)))
    assert rejected.reason is RejectReason.BAD_SCHEMA
    # The id is salvaged from the object for the result.
    assert rejected.command_id == "0b7c9a1e-0000-4000-8000-000000000001"


@pytest.mark.parametrize("bad_id", [7, None, "", "x" * 200, "new\nline", "trailing\n", ["a"]])
def test_bad_schema_without_a_usable_id_gives_none(bad_id: Any) -> None:
    rejected = reject(make_verifier(), payload(command(tamper=_set("id", bad_id))))
    assert rejected.reason is RejectReason.BAD_SCHEMA
    assert rejected.command_id is None


def test_params_nested_too_deeply_are_bad_schema() -> None:
    nested: Any = 1
    for _ in range(6):
        nested = {"a": nested}
    obj = command(action="display.show", device="display-1", params={"deep": nested})
    assert reject(make_verifier(), payload(obj)).reason is RejectReason.BAD_SCHEMA


def test_unknown_key() -> None:
    obj = command(key=STRANGER_KEY, key_id="stranger")
    rejected = reject(make_verifier(), payload(obj))
    assert rejected.reason is RejectReason.UNKNOWN_KEY
    assert rejected.command_id == obj["id"]
    assert rejected.expires_at is None  # not authentic: the id is not spent


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_set("params", {"hold_seconds": 30}), id="params-changed"),
        pytest.param(_set("device", "door-west-1"), id="device-changed"),
        pytest.param(_set("key_id", "other"), id="claims-other-key"),
        pytest.param(_set("sig", base64.b64encode(bytes(64)).decode()), id="zero-sig"),
    ],
)
def test_bad_signature(tamper: Callable[[dict[str, Any]], None]) -> None:
    rejected = reject(make_verifier(), payload(command(tamper=tamper)))
    assert rejected.reason is RejectReason.BAD_SIGNATURE
    assert rejected.expires_at is None


def test_signature_by_the_wrong_configured_key() -> None:
    obj = command(key=OTHER_KEY, key_id="platform-2026")
    assert reject(make_verifier(), payload(obj)).reason is RejectReason.BAD_SIGNATURE


def test_wrong_gateway() -> None:
    obj = command(gateway="south-gate-2")
    assert reject(make_verifier(), payload(obj)).reason is RejectReason.WRONG_GATEWAY


def test_not_yet_valid_with_skew_boundary() -> None:
    skew = 30.0
    obj = payload(command())
    assert make_verifier(now=T0 - skew).verify(obj)  # exactly at the edge: accepted
    rejected = reject(make_verifier(now=T0 - skew - 0.001), obj)
    assert rejected.reason is RejectReason.NOT_YET_VALID


def test_expired_with_boundary() -> None:
    obj = payload(command(ttl_s=30))
    assert make_verifier(now=T0 + 30).verify(obj)  # now == expires_at: accepted
    assert reject(make_verifier(now=T0 + 30.001), obj).reason is RejectReason.EXPIRED


def test_ttl_too_long_with_boundary() -> None:
    assert make_verifier().verify(payload(command(ttl_s=60)))
    rejected = reject(make_verifier(), payload(command(ttl_s=60.001)))
    assert rejected.reason is RejectReason.TTL_TOO_LONG


def test_replayed() -> None:
    obj = command()
    rejected = reject(make_verifier(seen=SeenSet(obj["id"])), payload(obj))
    assert rejected.reason is RejectReason.REPLAYED


def test_unknown_device() -> None:
    rejected = reject(make_verifier(), payload(command(device="door-nowhere")))
    assert rejected.reason is RejectReason.UNKNOWN_DEVICE
    assert rejected.expires_at == T0 + 30  # authentic: the processor spends the id


@pytest.mark.parametrize(
    ("action", "device", "params", "key", "key_id"),
    [
        pytest.param("door.set_mode", "door-west-1", {"mode": "open"}, PLATFORM_KEY,
                     "platform-2026", id="action-not-granted"),
        pytest.param("door.set_mode", "door-east-1", {"mode": "locked"}, OTHER_KEY, "other",
                     id="key-not-granted"),
        pytest.param("lift.call", "lift-1", {}, PLATFORM_KEY, "platform-2026",
                     id="driver-does-not-support"),
        pytest.param("gateway.ping", "door-east-1", {}, PLATFORM_KEY, "platform-2026",
                     id="ping-to-a-door"),
        pytest.param("door.open", GATEWAY, {}, PLATFORM_KEY, "platform-2026",
                     id="door-open-to-the-gateway"),
    ],
)  # fmt: skip
def test_not_permitted(
    action: str, device: str, params: dict[str, Any], key: Ed25519PrivateKey, key_id: str
) -> None:
    obj = command(action=action, device=device, params=params, key=key, key_id=key_id)
    assert reject(make_verifier(), payload(obj)).reason is RejectReason.NOT_PERMITTED


def test_device_missing_from_permissions_is_denied() -> None:
    config = make_config(permissions={})
    rejected = reject(make_verifier(config=config), payload(command()))
    assert rejected.reason is RejectReason.NOT_PERMITTED


def test_other_key_is_permitted_where_granted() -> None:
    obj = command(key=OTHER_KEY, key_id="other", device="door-west-1")
    assert make_verifier().verify(payload(obj)).key_id == "other"


# --- order precedence -----------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "now", "seen", "expected"),
    [
        pytest.param(
            lambda: command(tamper=_set("v", 2), key=STRANGER_KEY, key_id="stranger"),
            T0, (), RejectReason.BAD_SCHEMA, id="schema-before-key",
        ),
        pytest.param(
            lambda: command(key=STRANGER_KEY, key_id="stranger", gateway="south-gate-2"),
            T0, (), RejectReason.UNKNOWN_KEY, id="key-before-gateway",
        ),
        pytest.param(
            lambda: command(gateway="south-gate-2", tamper=_set("device", "door-west-1")),
            T0 + 1000, (), RejectReason.BAD_SIGNATURE, id="signature-before-gateway-and-time",
        ),
        pytest.param(
            lambda: command(gateway="south-gate-2", ttl_s=600),
            T0 + 1000, (), RejectReason.WRONG_GATEWAY, id="gateway-before-time",
        ),
        pytest.param(
            lambda: command(ttl_s=600), T0 - 100, (), RejectReason.NOT_YET_VALID,
            id="not-yet-valid-before-ttl",
        ),
        pytest.param(
            lambda: command(ttl_s=600), T0 + 1000, (), RejectReason.EXPIRED,
            id="expired-before-ttl",
        ),
        pytest.param(
            lambda: command(ttl_s=600), T0 + 1, ("0b7c9a1e-0000-4000-8000-000000000001",),
            RejectReason.TTL_TOO_LONG, id="ttl-before-replay",
        ),
        pytest.param(
            lambda: command(device="door-nowhere"), T0 + 1,
            ("0b7c9a1e-0000-4000-8000-000000000001",), RejectReason.REPLAYED,
            id="replay-before-device",
        ),
        pytest.param(
            lambda: command(device="door-nowhere", action="nothing.granted", params={}),
            T0 + 1, (), RejectReason.UNKNOWN_DEVICE, id="device-before-permission",
        ),
    ],
)  # fmt: skip
def test_first_failing_check_wins(
    make: Callable[[], dict[str, Any]], now: float, seen: tuple[str, ...], expected: RejectReason
) -> None:
    verifier = make_verifier(now=now, seen=SeenSet(*seen))
    assert reject(verifier, payload(make())).reason is expected


# --- unicode and canonical form ---------------------------------------------------------


UNICODE_PARAMS = {"text": "北门 开门 ✓ é \u2028", "emoji": "🚪", "z": 1, "a": [True, None, 1.5]}


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_unicode_params_sign_and_verify(ensure_ascii: bool) -> None:
    obj = command(action="display.show", device="display-1", params=UNICODE_PARAMS)
    data = json.dumps(obj, ensure_ascii=ensure_ascii).encode("utf-8")
    verified = make_verifier().verify(data)
    assert verified.params == OtherAction("display.show", UNICODE_PARAMS)


def test_canonical_form_is_sorted_compact_utf8_without_sig() -> None:
    obj = {"b": 1, "a": {"d": "é", "c": [1, 2]}, "sig": "dropped"}
    assert canonical_bytes(obj) == '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()


def test_unicode_params_tampered_fail() -> None:
    obj = command(action="display.show", device="display-1", params=UNICODE_PARAMS)
    obj["params"] = {**UNICODE_PARAMS, "text": "南门"}
    assert reject(make_verifier(), payload(obj)).reason is RejectReason.BAD_SIGNATURE


# --- anything at all ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_are_rejected_not_crashed(data: bytes) -> None:
    with pytest.raises(CommandRejected) as info:
        make_verifier().verify(data)
    assert info.value.reason in (RejectReason.BAD_JSON, RejectReason.BAD_SCHEMA)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*command(), "extra"]), JSON_VALUES)
def test_any_field_value_is_rejected_or_verified(field: str, value: Any) -> None:
    obj = command()
    obj[field] = value
    try:
        make_verifier().verify(json.dumps(obj).encode())
    except CommandRejected as rejected:
        assert rejected.reason is not RejectReason.BAD_JSON
