"""Swipes and bikes lost to bursts of line noise (issue 9 item 10).

A door node and a UHF reader on their simulators' real ptys, with the shipped
config's timings (``tests.gate_rig``). Each round puts a burst of noise on both
lines (garbage every 15 ms, every reply broken) and, during it, a resident
swipes a known card and a bike passes (its tag in the field for 1 s, then
gone). A swipe is lost when no lock pulse follows within ``--wait`` seconds
(or the card is discarded as stale); a bike is lost when no ``ebike.pass``
follows. Also counted: offline transitions of either device.

Run from the repository root, on demand (not part of the test gate):

    .venv/bin/python -m benchmarks.bench_line_noise [--rounds 10] [--burst-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.base import ReadingType
from tests.gate_rig import EPC, KNOWN, bike, gate


async def _rounds(workdir: Path, rounds: int, burst_s: float, wait_s: float) -> None:
    async with gate(workdir) as g:
        await g.ready()
        lost_swipes = lost_bikes = 0
        for n in range(rounds):
            pulses = len(g.door_sim.node.pulses)
            epc = f"{EPC[:-4]}{n:04X}"
            g.door_sim.server.noise_burst(burst_s)
            g.uhf_sim.noise_burst(burst_s)
            await asyncio.sleep(burst_s / 2)
            g.door_sim.present_card(KNOWN)
            g.uhf_sim.inject_pass(epc, reads=6, duration_s=1.0, leaves=True)
            try:
                async with asyncio.timeout(wait_s):
                    await g.door_sim.wait_until(lambda: len(g.door_sim.node.pulses) > pulses)  # noqa: B023
                swipe = "decided"
            except TimeoutError:
                lost_swipes += 1
                swipe = "LOST"
            try:
                await asyncio.wait_for(g.sink.wait_for(bike(epc)), wait_s)
                pass_ = "read"
            except TimeoutError:
                lost_bikes += 1
                pass_ = "LOST"
            print(f"round {n + 1}: swipe {swipe}, bike {pass_}", flush=True)
            # Let the card reader settle (re-armed) before the next round.
            async with asyncio.timeout(wait_s):
                await g.door_sim.wait_until(lambda: not g.door_sim.node.card_waiting)
        offline = sum(
            1
            for r in g.sink.readings
            if r.type is ReadingType.DEVICE_STATUS and r.data["state"] == "offline"
        )
        stale = g.door.health.counters.get("cards_discarded_stale", 0)
        print(
            f"{rounds} bursts of {burst_s * 1000:.0f} ms: swipes lost {lost_swipes}, "
            f"bikes lost {lost_bikes}, offline transitions {offline}, cards discarded stale {stale}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst-ms", type=int, default=500)
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait per outcome")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_rounds(Path(tmp), args.rounds, args.burst_ms / 1000, args.wait))


if __name__ == "__main__":
    main()
