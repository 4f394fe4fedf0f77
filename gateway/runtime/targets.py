"""Command targets: device ids and the door ids of multi-door controllers (CONTRACT.md 1.1).

A door node's device id is its door id; a controller with several doors
(``uhppote``) names each door, and door commands address those door ids. This
live view over the running drivers lets the command processor find either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from drivers.base import Driver


@runtime_checkable
class MultiDoor(Protocol):
    """A driver whose doors are command targets of their own."""

    def doors(self) -> Mapping[str, Driver]: ...


class CommandTargets(Mapping[str, Driver]):
    """``device_id -> driver`` plus ``door_id -> door`` for every multi-door driver."""

    def __init__(self, drivers: Mapping[str, Driver]) -> None:
        self._drivers = drivers

    def _all(self) -> dict[str, Driver]:
        targets = dict(self._drivers)
        for driver in self._drivers.values():
            if isinstance(driver, MultiDoor):
                targets.update(driver.doors())
        return targets

    def __getitem__(self, target: str) -> Driver:
        driver = self._drivers.get(target)
        if driver is not None:
            return driver
        return self._all()[target]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
