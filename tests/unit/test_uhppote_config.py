"""A uhppote controller's config: door ids are first-class names (CONTRACT.md 1.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config import load_config
from gateway.runtime.targets import CommandTargets
from tests.unit.test_config import base, problems_for


def controller(**overrides: Any) -> dict[str, Any]:
    config = {
        "id": "uhppote-9",
        "kind": "uhppote",
        "serial": 423187757,
        "address": "10.0.0.9",
        "doors": {1: "gate-north", 3: "gate-south"},
    }
    config.update(overrides)
    return config


def test_permissions_may_name_a_controllers_door_ids(tmp_path: Path) -> None:
    config = base()
    config["devices"].append(controller())
    config["commands"]["public_keys"] = {"platform-2026": "A" * 43 + "="}
    config["commands"]["permissions"] = {
        "gate-north": {"actions": ["door.open"], "key_ids": ["platform-2026"]}
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(path)
    assert loaded.config.commands.permissions["gate-north"].actions


def test_a_door_id_may_not_reuse_a_device_id(tmp_path: Path) -> None:
    config = base()
    config["devices"].append(controller(doors={1: "door-east-1"}))
    problems = problems_for(tmp_path, config)
    assert any("door-east-1" in p and "twice" in p for p in problems), problems


def test_door_numbers_are_1_to_4(tmp_path: Path) -> None:
    config = base()
    config["devices"].append(controller(doors={5: "gate-x"}))
    assert any("1..4" in p for p in problems_for(tmp_path, config))


def test_command_targets_route_door_ids_to_the_controllers_doors() -> None:
    class Door:
        device_id = "gate-a"

    class Controller:
        device_id = "ctl"

        def doors(self) -> dict[str, Any]:
            return {"gate-a": Door()}

    class Plain:
        device_id = "temp-1"

    targets = CommandTargets({"ctl": Controller(), "temp-1": Plain()})  # type: ignore[dict-item]
    assert isinstance(targets["gate-a"], Door)
    assert isinstance(targets["temp-1"], Plain)
    assert sorted(targets) == ["ctl", "gate-a", "temp-1"]
    assert "gate-b" not in targets


def test_two_controllers_may_not_listen_on_one_port(tmp_path: Path) -> None:
    config = base()
    config["devices"].append(controller(listen="0.0.0.0:60001"))
    config["devices"].append(
        controller(id="uhppote-10", serial=423187758, doors={1: "gate-x"}, listen="10.0.0.2:60001")
    )
    problems = problems_for(tmp_path, config)
    assert any("both listen on UDP port 60001" in p for p in problems), problems
