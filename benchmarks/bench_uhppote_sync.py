"""UHPPOTE card sync: a full sync of 20,000 cards to one controller, then a 1-card change.

Issue 11 benchmark. The driver (``drivers.uhppote`` with its card sync) runs
in this process against the simulator over real loopback UDP, with a list of
``--cards`` cards (a third of them on a time profile, varied doors and
validity). Printed per run: the time from the driver's start to the verified
first pass, the frames the driver sent (every request, retries included) and
those the simulator received, and the frames a 1-card change costs (the
difference written, plus the count check and the read-back sample).

    .venv/bin/python -m benchmarks.bench_uhppote_sync [--cards 20000] [--runs 3]
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import bench_parser, median_of, repeat_runs
from drivers.access_rules import CardEntry
from tests.integration.test_uhppote_cards import DAY, make_list
from tests.uhppote_rig import ListedAccess, running


async def one_run(cards: int) -> tuple[float, int, int, int]:
    listed = make_list(cards, seed=int(time.time()))
    access = ListedAccess(list(listed.values()), {"day": DAY}, version=1)
    started = time.monotonic()
    async with running(access=access, card_check_s=0.1, timeout_ms=1000) as rig:
        sync = rig.driver.card_sync
        assert sync is not None
        await rig.sink.until(lambda: sync.passes >= 1, timeout=600)
        elapsed = time.monotonic() - started
        full_sent = rig.driver.link.frames_sent
        full_received = rig.sim.frames_received
        assert len(rig.sim.state.cards) == cards
        changed = dict(listed)
        card = next(iter(changed))
        changed[card] = CardEntry(card, None, ("gate-west",), None, None, None)
        before = rig.driver.link.frames_sent
        access.replace(2, changed)
        await rig.sink.until(lambda: sync.passes >= 2, timeout=60)
        delta = rig.driver.link.frames_sent - before
    return elapsed, full_sent, full_received, delta


def main(cards: int, runs: int) -> None:
    def describe(r: tuple[float, int, int, int]) -> str:
        elapsed, sent, received, delta = r
        return (
            f"{cards} cards in {elapsed:.1f} s ({cards / elapsed:,.0f} cards/s), "
            f"frames sent {sent} (simulator received {received}, "
            f"{sent / cards:.2f} per card); 1-card change: {delta} frames"
        )

    results = repeat_runs(runs, lambda _: asyncio.run(one_run(cards)), describe)
    print(f"median full sync: {median_of(results, lambda r: r[0]):.1f} s for {cards} cards")


if __name__ == "__main__":
    parser = bench_parser(__doc__)
    parser.add_argument("--cards", type=int, default=20_000)
    args = parser.parse_args()
    main(args.cards, args.runs)
