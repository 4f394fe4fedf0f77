"""Command wire model: timestamps, result JSON, contract strings, the commands: config."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from gateway.cli.operator_tools import public_key_b64
from gateway.commands.model import (
    CommandResult,
    CommandsConfig,
    CommandStatus,
    RejectReason,
    parse_rfc3339_utc,
)
from gateway.timefmt import rfc3339

CONTRACT_REASONS = (
    "bad_json bad_schema unknown_key bad_signature wrong_gateway not_yet_valid expired "
    "ttl_too_long replayed unknown_device not_permitted device_offline device_error timeout"
)


def test_contract_strings() -> None:
    assert [r.value for r in RejectReason] == CONTRACT_REASONS.split()
    assert [s.value for s in CommandStatus] == ["done", "rejected", "failed"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T08:00:00.123Z", datetime(2026, 11, 29, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-29T08:00:00Z", datetime(2026, 11, 29, 8, 0, 0, tzinfo=UTC)),
        ("2026-11-29T08:00:00.1Z", datetime(2026, 11, 29, 8, 0, 0, 100000, tzinfo=UTC)),
        ("2026-11-29T08:00:00.123456Z", datetime(2026, 11, 29, 8, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339_utc(text: str, expected: datetime) -> None:
    assert parse_rfc3339_utc(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T08:00:00.123+00:00",
        "2026-11-29T08:00:00.123",
        "2026-11-29T08:00:00.1234567Z",
        "2026-11-29T08:00:60Z",
        "2026-13-01T00:00:00Z",
        "26-11-29T08:00:00Z",
        "2026-11-29T08:00:00.123Z\n",
        "\uff12\uff10\uff12\uff16-11-29T08:00:00Z",  # full-width digits
    ],
)
def test_parse_rfc3339_utc_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|out of range|must be in"):
        parse_rfc3339_utc(text)


def test_format_rfc3339_ms() -> None:
    assert rfc3339(1_795_939_200.123) == "2026-11-29T08:00:00.123Z"
    assert rfc3339(1_795_939_200.0) == "2026-11-29T08:00:00.000Z"
    assert rfc3339(1_795_939_200.9996) == "2026-11-29T08:00:01.000Z"


def test_result_json_matches_contract() -> None:
    result = CommandResult(
        id="0b7c9a1e",
        status=CommandStatus.DONE,
        reason=None,
        device="door-east-1",
        at=1_795_939_200.5,
        latency_ms=14.2345,
    )
    assert json.loads(result.to_json()) == {
        "v": 1,
        "id": "0b7c9a1e",
        "status": "done",
        "reason": None,
        "device": "door-east-1",
        "at": "2026-11-29T08:00:00.500Z",
        "latency_ms": 14.2,
    }


def test_result_json_of_unparsable_payload_has_null_id() -> None:
    result = CommandResult(None, CommandStatus.REJECTED, RejectReason.BAD_JSON, None, 0.0, 0.3)
    body = json.loads(result.to_json())
    assert body["id"] is None
    assert body["reason"] == "bad_json"
    assert body["status"] == "rejected"


# --- configuration -----------------------------------------------------------------

KEY_B64 = public_key_b64(Ed25519PrivateKey.generate())

EXAMPLE_YAML = f"""
commands:
  public_keys:
    platform-2026: "{KEY_B64}"
  max_ttl_s: 60
  skew_s: 30
  max_payload_bytes: 8192
  execute_timeout_s: 5
  permissions:
    door-east-1:
      actions: [door.open, door.set_mode]
      key_ids: [platform-2026]
    north-gate-1:
      actions: [gateway.ping]
      key_ids: [platform-2026]
"""


def test_example_yaml_parses() -> None:
    config = CommandsConfig.model_validate(yaml.safe_load(EXAMPLE_YAML)["commands"])
    assert config.permissions["door-east-1"].actions == {"door.open", "door.set_mode"}
    assert config.public_key_bytes()["platform-2026"] == base64.b64decode(KEY_B64)


def test_defaults() -> None:
    config = CommandsConfig()
    assert (config.max_ttl_s, config.skew_s, config.max_payload_bytes) == (60, 30, 8192)
    assert config.execute_timeout_s == 5
    assert config.permissions == {}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("-----BEGIN PUBLIC KEY-----", "not a PEM file"),
        (base64.b64encode(bytes(33)).decode(), "decodes to 33 bytes"),
        ("AAAA", "decodes to 3 bytes"),
    ],
)
def test_bad_public_key_explains(key: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        CommandsConfig.model_validate({"public_keys": {"platform-2026": key}})
    assert "platform-2026" in str(info.value)


def test_permission_naming_an_unknown_key_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"door-east-1.*missing from public_keys: ghost"):
        CommandsConfig.model_validate(
            {
                "public_keys": {"platform-2026": KEY_B64},
                "permissions": {"door-east-1": {"actions": ["door.open"], "key_ids": ["ghost"]}},
            }
        )


@pytest.mark.parametrize(
    "raw",
    [
        {"max_tll_s": 60},
        {"permissions": {"door-east-1": {"actions": ["door.open"], "keys": ["x"]}}},
        {"permissions": {"Door East": {"actions": ["door.open"], "key_ids": ["x"]}}},
        {"permissions": {"door-east-1": {"actions": [], "key_ids": ["x"]}}},
        {"max_ttl_s": 0},
    ],
)
def test_config_typos_and_nonsense_fail(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CommandsConfig.model_validate(raw)


def test_config_is_frozen() -> None:
    config = CommandsConfig()
    with pytest.raises(ValidationError):
        config.skew_s = 1  # type: ignore[misc]
