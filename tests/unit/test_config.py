"""Configuration: the shipped file is valid; every kind of error names its path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import main
from gateway.cli.operator_tools import keygen
from gateway.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def problems_for(tmp_path: Path, config: dict[str, Any] | str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_the_shipped_config_is_valid() -> None:
    loaded = load_config(REPO / "config.yaml")
    assert loaded.config.gateway.id == "north-gate-1"
    assert [d.kind for d in loaded.config.devices] == [
        "door_node",
        "uhf_reader",
        "temperature_gate",
        "ble_receiver",
        "uhppote",
    ]
    assert loaded.data_dir == REPO / "data"
    assert loaded.config.topic_root == "estates/changqing/gateways/north-gate-1"
    assert loaded.config.client_id == "changqing-north-gate-1"


def test_unknown_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = (REPO / "config.yaml").read_text().replace("  log_level: INFO", "  log_levle: INFO")
    problems = problems_for(tmp_path, text)
    line = next(n for n, text_line in enumerate(text.splitlines(), 1) if "log_levle" in text_line)
    assert problems == [f"gateway.log_levle: unknown key (typo?) (line {line})"]


def test_device_transport_error_has_the_dotted_path(tmp_path: Path) -> None:
    config = base()
    config["devices"][2]["transport"]["baudrate"] = 9601
    problems = problems_for(tmp_path, config)
    assert len(problems) == 1
    assert problems[0].startswith("devices[2].transport.baudrate: ")
    assert "9600" in problems[0] and "19200" in problems[0]  # what would be valid


def test_unknown_device_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    config = base()
    config["devices"][1]["kind"] = "fog_machine"
    (problem,) = problems_for(tmp_path, config)
    assert problem.startswith("devices[1]")
    for kind in ("door_node", "uhf_reader", "temperature_gate", "ble_receiver"):
        assert kind in problem


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    config = base()
    config["gateway"]["site"] = "Chang Qing"
    config["mqtt"]["brokers"] = ["http://broker:1883"]
    config["outbox"]["commit_interval_ms"] = 0
    problems = problems_for(tmp_path, config)
    assert [p.split(":")[0] for p in problems] == [
        "gateway.site",
        "mqtt.brokers",
        "outbox.commit_interval_ms",
    ]
    assert "mqtt://" in problems[1]


def test_missing_section_and_cross_field_rules(tmp_path: Path) -> None:
    config = base()
    del config["gateway"]
    assert problems_for(tmp_path, config)[0].startswith("gateway: Field required")
    config = base()
    config["mqtt"]["tls"] = {"cert": "client.pem"}
    assert "tls.cert and tls.key go together" in problems_for(tmp_path, config)[0]
    config = base()
    config["devices"].append(dict(config["devices"][0]))
    assert "used twice" in problems_for(tmp_path, config)[0]


def test_permissions_must_name_configured_devices(tmp_path: Path) -> None:
    key_id, public = keygen(tmp_path / "keys", key_id="platform").split(": ")
    config = base()
    config["commands"]["public_keys"] = {key_id: public}
    config["commands"]["permissions"] = {
        "door-west-9": {"actions": ["door.open"], "key_ids": [key_id]}
    }
    (problem,) = problems_for(tmp_path, config)
    assert "door-west-9" in problem and "not configured" in problem


def test_values_are_never_echoed(tmp_path: Path) -> None:
    config = base()
    config["mqtt"]["username"] = {"secret": "hunter2"}
    config["mqtt"]["keepalive_s"] = "hunter2"
    problems = problems_for(tmp_path, config)
    assert problems and not any("hunter2" in p for p in problems)


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    (problem,) = problems_for(tmp_path, "gateway:\n  site: [unclosed\n  id: x\n")
    assert "not valid YAML" in problem and "line" in problem


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = base()
    config["access"]["cards"] = "cards.txt"
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded.data_dir == tmp_path / "etc" / "data"
    assert loaded.config.access.cards is not None
    assert loaded.path(loaded.config.access.cards) == tmp_path / "etc" / "cards.txt"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "config.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    config = base()
    config["devices"][0]["transport"]["parity"] = "X"
    bad.write_text(yaml.safe_dump(config))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "devices[0].transport.parity" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
