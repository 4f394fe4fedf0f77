"""Config of access lists: gateway.timezone, access.source, access.key_ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli.operator_tools import public_key_b64
from gateway.config import load_config
from tests.unit.test_config import base, problems_for

KEY = public_key_b64(Ed25519PrivateKey.generate())


def platform(**gateway: Any) -> dict[str, Any]:
    config = base()
    config["gateway"].update(gateway)
    config["commands"] = {"public_keys": {"platform-2026": KEY, "ops": KEY}}
    config["access"] = {"source": "platform", "key_ids": ["platform-2026"]}
    return config


def test_platform_source_with_zone_and_keys_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(platform(timezone="Asia/Shanghai")))
    config = load_config(path).config
    assert config.access.source == "platform"
    assert config.gateway.tz is not None and config.gateway.tz.key == "Asia/Shanghai"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", ""])
def test_unknown_time_zone_is_refused(tmp_path: Path, zone: str) -> None:
    problems = problems_for(tmp_path, platform(timezone=zone))
    assert any("gateway.timezone" in p for p in problems), problems


def test_platform_needs_a_time_zone(tmp_path: Path) -> None:
    config = platform()
    config["gateway"].pop("timezone", None)
    problems = problems_for(tmp_path, config)
    assert any("gateway.timezone" in p for p in problems), problems


def test_platform_needs_key_ids(tmp_path: Path) -> None:
    config = platform(timezone="Asia/Shanghai")
    config["access"]["key_ids"] = []
    assert any("access.key_ids" in p for p in problems_for(tmp_path, config))


def test_access_key_ids_must_be_known_keys(tmp_path: Path) -> None:
    config = platform(timezone="Asia/Shanghai")
    config["access"]["key_ids"] = ["nobody"]
    problems = problems_for(tmp_path, config)
    assert any("nobody" in p for p in problems), problems
