"""Keeps one UHPPOTE controller's card table equal to the access list (issue 11, item 3).

``drivers.uhppote_cards`` says what the table should be; this module makes it
so, with as few frames as it can:

- what the controller holds is known in memory once read (a walk by index at
  start, after a reset or a replacement, or when a check disagrees); after
  that only the difference is written: put-card for new or changed cards,
  delete-card for removed ones, set-time-profile for changed profiles;
- each pass ends with a check: get-cards must count the plan, and a sample of
  cards read back by id must equal the plan, else the table is walked again;
- only then is the list's version recorded, durably, as the ``list_version``
  written to this controller (door events carry it);
- a reset (reason 28/29 in the event log) or a card count that differs when
  the controller comes back (a replacement, a wipe) forgets what was held, so
  the next pass reads the table again and refills it.

It runs beside the event loop of the driver (``run``), sharing the link, so
a long first sync delays no event for longer than one request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from typing import TYPE_CHECKING, Any

from drivers.access_rules import AccessList
from drivers.base import DeviceError, DeviceState, Priority
from drivers.transports.errors import TransportError
from drivers.uhppote_cards import CardRecord, ProfileRecord, TablePlan, plan_table

if TYPE_CHECKING:
    from drivers.uhppote import UhppoteDriver

_LOGGER = logging.getLogger(__name__)

TOMBSTONE = 0xFFFFFFFF
SAMPLE_SIZE = 20  # cards read back by id after each pass
_NO_TIME = dt.time(0, 0)


class CardSync:
    """The card-table keeper of one controller (module docstring)."""

    def __init__(
        self,
        driver: UhppoteDriver,
        access: AccessList,
        *,
        check_interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self._driver = driver
        self._access = access
        self._check_interval_s = check_interval_s
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self.held: dict[int, CardRecord] | None = None
        self.held_profiles: dict[int, ProfileRecord] = {}
        self._written: tuple[int | None, int] | None = None  # (version, plan hash) last verified
        self._check_count = True
        self.last_plan: TablePlan | None = None
        self.passes = 0
        self.synced = asyncio.Event()  # set after each verified pass (tests, benchmark)

    # ------------------------------------------------------ driver's hooks

    def controller_reset(self) -> None:
        self.held = None
        self.held_profiles = {}
        self._written = None
        self._wake.set()

    def controller_configured(self) -> None:
        self._check_count = True
        self._wake.set()

    # ---------------------------------------------------------------- loop

    async def run(self) -> None:
        """Sync whenever due, until cancelled; failures wait for the next check."""
        while True:
            if self._driver.health.state is DeviceState.ONLINE:
                try:
                    await self.sync_once()
                except (TransportError, DeviceError) as exc:
                    self._driver.health.count("card_sync_failures")
                    _LOGGER.warning("card sync failed: device=%s %s", self._driver.device_id, exc)
            self._wake.clear()
            try:
                async with asyncio.timeout(self._check_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def sync_once(self) -> bool:
        """One pass if anything changed; True when the table was written or checked."""
        self._access.refresh()
        version = self._access.version
        link = self._driver.link
        if self._check_count and self.held is not None:
            count = (await link.call("get_cards")).cards
            if count != len(self.held):
                _LOGGER.warning(
                    "card table changed behind our back (reset or replaced): device=%s "
                    "held=%d expected=%d",
                    self._driver.device_id,
                    count,
                    len(self.held),
                )
                self.held = None
        self._check_count = False
        if (
            version is not None
            and self.held is not None
            and self._written is not None
            and self._written[0] == version
        ):
            return False  # a versioned list that has not moved: nothing to plan
        plan = self._plan()
        key = (version, hash((tuple(plan.cards.items()), tuple(plan.profiles.items()))))
        if self.held is not None and key == self._written:
            return False
        if self.held is None:
            await self._read_back(plan)
        assert self.held is not None
        writes = await self._write(plan)
        await self._verify(plan)
        self._written = key
        self.last_plan = plan
        self.passes += 1
        await self._driver.record_list_version(version)
        health = self._driver.health
        health.counters["cards_on_controller"] = len(plan.cards)
        health.counters["cards_skipped"] = plan.skipped
        self._driver.status(
            f"card table synced: {len(plan.cards)} cards, {writes} writes, "
            f"{plan.skipped} entries skipped (do not fit this controller)",
            Priority.ROUTINE,
            extra={
                "list_version": version,
                "cards": len(plan.cards),
                "writes": writes,
                "skipped": {
                    "card_id": plan.skipped_id,
                    "window": plan.skipped_window,
                    "profile": plan.skipped_profile,
                    "repeat": plan.skipped_repeat,
                },
            },
        )
        self.synced.set()
        return True

    def _plan(self) -> TablePlan:
        zone = self._driver.zone
        today = dt.datetime.fromtimestamp(self._driver.clock.wall(), zone).date()
        return plan_table(
            self._access.entries(),
            self._access.profiles(),
            self._driver.config.doors,
            zone,
            today,
        )

    # -------------------------------------------------------------- steps

    async def _read_back(self, plan: TablePlan) -> None:
        """Walk the controller's table by index, and read the planned profiles."""
        link = self._driver.link
        count = (await link.call("get_cards")).cards
        held: dict[int, CardRecord] = {}
        index = 1
        # Tombstones are not counted: stop at the count, at the end (card 0), or
        # after a generous bound so a confused controller cannot keep us here.
        while len(held) < count and index <= 2 * count + 64:
            reply = await link.call("get_card_by_index", index)
            index += 1
            if reply.card_number == 0:
                break
            if reply.card_number != TOMBSTONE:
                held[reply.card_number] = _card(reply)
        self.held = held
        profiles: dict[int, ProfileRecord] = {}
        for pid in plan.profiles:
            reply = await link.call("get_time_profile", pid)
            if reply.profile_id == pid:
                profiles[pid] = _profile(reply)
        self.held_profiles = profiles

    async def _write(self, plan: TablePlan) -> int:
        link = self._driver.link
        held = self.held
        assert held is not None
        writes = 0
        for pid, record in plan.profiles.items():
            if _padded(self.held_profiles.get(pid)) == _padded(record):
                continue
            segments = [*record.segments, *[(_NO_TIME, _NO_TIME)] * 3][:3]
            reply = await link.call(
                "set_time_profile",
                pid,
                record.start,
                record.end,
                *record.weekdays,
                segments[0][0],
                segments[0][1],
                segments[1][0],
                segments[1][1],
                segments[2][0],
                segments[2][1],
                record.linked,
            )
            writes += 1
            if not reply.stored:
                raise DeviceError(self._driver.device_id, f"time profile {pid} refused")
            self.held_profiles[pid] = record
        for number, card in plan.cards.items():
            if held.get(number) == card:
                continue
            reply = await link.call("put_card", number, card.start, card.end, *card.doors, 0)
            writes += 1
            if not reply.stored:
                raise DeviceError(self._driver.device_id, "put-card refused (table full?)")
            held[number] = card
        for number in [n for n in held if n not in plan.cards]:
            await link.call("delete_card", number)
            writes += 1
            del held[number]
        return writes

    async def _verify(self, plan: TablePlan) -> None:
        link = self._driver.link
        count = (await link.call("get_cards")).cards
        if count != len(plan.cards):
            self.held = None
            raise DeviceError(
                self._driver.device_id, f"card count {count} after sync, expected {len(plan.cards)}"
            )
        numbers = list(plan.cards)
        for number in self._rng.sample(numbers, min(SAMPLE_SIZE, len(numbers))):
            reply = await link.call("get_card", number)
            if reply.card_number != number or _card(reply) != plan.cards[number]:
                self.held = None
                raise DeviceError(self._driver.device_id, "a card read back differs from the list")


def _card(reply: Any) -> CardRecord:
    return CardRecord(
        reply.card_number,
        reply.start_date,
        reply.end_date,
        (reply.door_1, reply.door_2, reply.door_3, reply.door_4),
    )


def _profile(reply: Any) -> ProfileRecord:
    days = (
        reply.monday,
        reply.tuesday,
        reply.wednesday,
        reply.thursday,
        reply.friday,
        reply.saturday,
        reply.sunday,
    )
    segments = tuple(
        (
            getattr(reply, f"segment_{i}_start") or _NO_TIME,
            getattr(reply, f"segment_{i}_end") or _NO_TIME,
        )
        for i in (1, 2, 3)
    )
    return ProfileRecord(
        reply.profile_id,
        reply.start_date,
        reply.end_date,
        days,
        segments,
        reply.linked_profile_id,
    )


def _padded(record: ProfileRecord | None) -> ProfileRecord | None:
    """Compare profiles as the controller stores them: unused segments are 00:00-00:00."""
    if record is None:
        return None
    segments = tuple([*record.segments, *[(_NO_TIME, _NO_TIME)] * 3][:3])
    return ProfileRecord(
        record.profile_id, record.start, record.end, record.weekdays, segments, record.linked
    )
