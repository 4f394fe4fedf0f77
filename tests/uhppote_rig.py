"""A UHPPOTE driver attached to its simulator over real loopback UDP, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.access_rules import CardEntry, Profile
from drivers.base import DeviceState, ReadingType, SystemClock
from drivers.sim.uhppote import UhppoteSimulator
from drivers.uhppote import UhppoteConfig, UhppoteDriver, build_driver
from tests.fakes import WAIT_S, RecordingSink

SERIAL = 405419896


class MemoryState:
    """A ``DeviceStateStore`` in memory (the durable one is tested through the daemon)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}
        self.puts = 0

    async def get(self, device_id: str, key: str) -> str | None:
        return self.values.get((device_id, key))

    async def put(self, device_id: str, key: str, value: str) -> None:
        self.puts += 1
        self.values[(device_id, key)] = value


class ListedAccess:
    """An ``AccessList`` in memory, as the platform's store would present it."""

    def __init__(
        self,
        cards: list[CardEntry] | None = None,
        profiles: dict[str, Profile] | None = None,
        version: int | None = 1,
    ) -> None:
        self.cards = {c.card: c for c in cards or []}
        self._profiles = profiles or {}
        self._version = version

    def replace(self, version: int, cards: dict[str, CardEntry]) -> None:
        self.cards = cards
        self._version = version

    @property
    def version(self) -> int | None:
        return self._version

    def refresh(self) -> None:
        return None

    def lookup(self, card_hex: str) -> CardEntry | None:
        return self.cards.get(card_hex)

    def lookup_all(self, card_hex: str) -> tuple[CardEntry, ...]:
        entry = self.cards.get(card_hex)
        return (entry,) if entry else ()

    def entries(self) -> Iterator[CardEntry]:
        return iter(sorted(self.cards.values(), key=lambda e: e.card))

    def profiles(self) -> Mapping[str, Profile]:
        return self._profiles


class Sink(RecordingSink):
    """The tests' sink, with views of door events and status readings."""

    def doors(self, event: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(r.data)
            for r in self.readings
            if r.type is ReadingType.DOOR_EVENT and (event is None or r.data["event"] == event)
        ]

    def statuses(self) -> list[dict[str, Any]]:
        return [dict(r.data) for r in self.readings if r.type is ReadingType.DEVICE_STATUS]

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Wait until a fact holds, re-checked at each reading."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Rig:
    sim: UhppoteSimulator
    driver: UhppoteDriver
    sink: Sink
    state: MemoryState
    task: asyncio.Task[None] | None = None
    trusted: list[bool] = field(default_factory=lambda: [True])

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.driver.run(), name="uhppote")
        await self.sink.until(lambda: self.driver.health.state is DeviceState.ONLINE)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            _done, pending = await asyncio.wait({self.task}, timeout=5)
            if pending:
                self.task.print_stack()
                raise AssertionError("the driver did not stop when cancelled")
            self.task = None


def controller_entry(address: str, /, **overrides: Any) -> dict[str, Any]:
    """The test controller's ``devices[]`` entry at ``address``, with short timings."""
    return {
        "id": "gate-ctl-1",
        "kind": "uhppote",
        "serial": SERIAL,
        "address": address,
        "doors": {1: "gate-east", 2: "gate-west"},
        "listen": "127.0.0.1:0",
        "timeout_ms": 200,
        "retry_s": 0.2,
        "catch_up_interval_s": 30,
        **overrides,
    }


def config(sim_address: str, **overrides: Any) -> UhppoteConfig:
    return UhppoteConfig.model_validate(controller_entry(sim_address, **overrides))


async def make_rig(
    *,
    sim: UhppoteSimulator | None = None,
    state: MemoryState | None = None,
    zone: dt.tzinfo = dt.UTC,
    access: ListedAccess | None = None,
    **overrides: Any,
) -> Rig:
    if sim is None:
        sim = UhppoteSimulator(SERIAL)
        await sim.start()
    sink = Sink()
    state = state or MemoryState()
    trusted = [True]
    driver = build_driver(
        config(sim.address, **overrides),
        sink=sink,
        clock=SystemClock(),
        state=state,
        zone=zone,
        clock_trusted=lambda: trusted[0],
        access=access,
    )
    return Rig(sim, driver, sink, state, trusted=trusted)


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[Rig]:
    """A started rig (its own simulator unless ``sim=`` is given), stopped on exit."""
    own_sim = "sim" not in kwargs
    rig = await make_rig(**kwargs)
    try:
        await rig.start()
        yield rig
    finally:
        await rig.stop()
        if own_sim:
            await rig.sim.stop()
