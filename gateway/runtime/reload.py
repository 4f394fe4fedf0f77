"""What a configuration reload (SIGHUP) changes: a pure diff of two configs.

Only ``devices`` (and ``access``, which the door nodes hold) are applied while
the daemon runs: a device added, removed or changed is started, stopped or
restarted, and every other device keeps running untouched. Any other section
that differs is reported as needing a restart and is not applied (README.md,
"Reloading the configuration"). The supervisor does the task bookkeeping;
this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config

# Sections applied live; every other top-level section needs a restart.
LIVE_SECTIONS = frozenset({"devices", "access"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Device ids by fate, each tuple in config order, plus the sections not applied."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    access_changed: bool
    needs_restart: tuple[str, ...]

    @property
    def to_stop(self) -> tuple[str, ...]:
        return self.removed + self.changed

    @property
    def to_start(self) -> tuple[str, ...]:
        return self.changed + self.added

    @property
    def applies_anything(self) -> bool:
        return bool(self.to_stop or self.to_start or self.access_changed)


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Compare the running config with a newly read (valid) one.

    A device is "changed" when any of its settings differ; when ``access``
    differs, every door node is changed too, so that it picks up the new
    access list.
    """
    old_devices = {device.id: device for device in running.devices}
    new_ids = {device.id for device in new.devices}
    access_changed = running.access != new.access
    added: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for device in new.devices:
        old = old_devices.get(device.id)
        if old is None:
            added.append(device.id)
        elif old != device or (access_changed and device.kind == "door_node"):
            changed.append(device.id)
        else:
            unchanged.append(device.id)
    removed = [device.id for device in running.devices if device.id not in new_ids]
    needs_restart = [
        name
        for name in type(running).model_fields
        if name not in LIVE_SECTIONS and getattr(running, name) != getattr(new, name)
    ]
    return ReloadPlan(
        added=tuple(added),
        removed=tuple(removed),
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        access_changed=access_changed,
        needs_restart=tuple(needs_restart),
    )
