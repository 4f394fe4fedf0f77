"""plan_reload: which devices a SIGHUP starts, stops or restarts, and what needs a restart."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.runtime.reload import plan_reload


def device(device_id: str, kind: str = "temperature_gate", **options: Any) -> dict[str, Any]:
    transports = {
        "temperature_gate": {"type": "modbus_rtu", "port": f"/dev/{device_id}"},
        "door_node": {"type": "modbus_rtu", "port": f"/dev/{device_id}"},
        "uhf_reader": {"type": "serial", "port": f"/dev/{device_id}"},
    }
    return {"id": device_id, "kind": kind, "transport": transports[kind], **options}


def config(devices: list[dict[str, Any]], **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "gateway": {"site": "changqing", "id": "north-gate-1"},
        "mqtt": {"brokers": ["mqtt://127.0.0.1:1883"]},
        "access": {"cards": "access/cards.txt"},
        "devices": devices,
    }
    raw.update(sections)
    return Config.model_validate(raw)


def test_identical_configs_change_nothing() -> None:
    running = config([device("temp-gate-1"), device("door-east-1", "door_node")])
    plan = plan_reload(running, running.model_copy())
    assert plan.unchanged == ("temp-gate-1", "door-east-1")
    assert not plan.applies_anything
    assert plan.needs_restart == ()


def test_added_removed_and_changed_devices() -> None:
    running = config([device("temp-gate-1"), device("door-east-1", "door_node"), device("rfid")])
    new = config(
        [
            device("temp-gate-2"),
            device("door-east-1", "door_node"),
            device("temp-gate-1", poll_interval_ms=500),
        ]
    )
    plan = plan_reload(running, new)
    assert plan.added == ("temp-gate-2",)
    assert plan.removed == ("rfid",)
    assert plan.changed == ("temp-gate-1",)
    assert plan.unchanged == ("door-east-1",)
    assert plan.to_stop == ("rfid", "temp-gate-1")
    assert plan.to_start == ("temp-gate-1", "temp-gate-2")
    assert plan.applies_anything


def test_a_new_kind_under_the_same_id_is_a_change() -> None:
    plan = plan_reload(config([device("gate-1")]), config([device("gate-1", "uhf_reader")]))
    assert plan.changed == ("gate-1",)


def test_access_change_restarts_the_door_nodes_only() -> None:
    devices = [device("door-east-1", "door_node"), device("temp-gate-1")]
    plan = plan_reload(
        config(devices), config(devices, access={"cards": "/etc/estate-gateway/cards.txt"})
    )
    assert plan.access_changed
    assert plan.changed == ("door-east-1",)
    assert plan.unchanged == ("temp-gate-1",)
    assert plan.needs_restart == ()


def test_other_sections_need_a_restart() -> None:
    devices = [device("temp-gate-1")]
    new = config(
        devices,
        mqtt={"brokers": ["mqtt://10.0.0.2:1883"]},
        outbox={"max_mb": 64},
        metrics={"port": 9200},
    )
    plan = plan_reload(config(devices), new)
    assert plan.needs_restart == ("mqtt", "outbox", "metrics")
    assert not plan.applies_anything
