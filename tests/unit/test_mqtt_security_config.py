"""Plaintext is a decision, not an accident (issue 9, item 9); the password file mode."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import MqttConfig


def mqtt(**fields: Any) -> MqttConfig:
    return MqttConfig.model_validate(fields)


@pytest.mark.parametrize(
    "brokers",
    [
        ["mqtt://broker.example:1883"],
        ["mqtt://10.0.0.5"],
        ["mqtts://broker.example", "mqtt://broker.example"],
    ],
)
def test_password_over_plaintext_to_another_host_is_an_error(brokers: list[str]) -> None:
    with pytest.raises(ValidationError, match="allow_plaintext"):
        mqtt(brokers=brokers, username="gw", password_file="secret")
    mqtt(brokers=brokers, username="gw", password_file="secret", allow_plaintext=True)


def test_password_env_counts_as_a_password() -> None:
    with pytest.raises(ValidationError, match="plaintext"):
        mqtt(brokers=["mqtt://broker.example"], username="gw", password_env="MQTT_PASSWORD")


def test_mixed_schemes_are_an_error_even_without_a_password() -> None:
    with pytest.raises(ValidationError, match="mix mqtts:// and mqtt://"):
        mqtt(brokers=["mqtts://a.example", "mqtt://b.example"])
    mqtt(brokers=["mqtts://a.example", "mqtt://b.example"], allow_plaintext=True)


@pytest.mark.parametrize(
    "brokers",
    [
        ["mqtt://127.0.0.1:1883"],
        ["mqtt://localhost"],
        ["mqtt://[::1]:1884"],
        ["mqtts://broker.example", "mqtts://backup.example"],
    ],
)
def test_loopback_or_tls_with_a_password_is_fine(brokers: list[str]) -> None:
    mqtt(brokers=brokers, username="gw", password_file="secret")


def test_plaintext_without_a_password_is_fine() -> None:
    mqtt(brokers=["mqtt://broker.example"])


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, True), (0o644, True)])
def test_password_file_readable_by_others_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    config = mqtt(brokers=["mqtts://broker.example"], username="gw", password_file="mqtt.password")
    with caplog.at_level(logging.WARNING):
        password = config.password(tmp_path)
    assert password is not None and password.get_secret_value() == "s3cret"
    assert ("readable by group or others" in caplog.text) is warned
    assert "s3cret" not in caplog.text
