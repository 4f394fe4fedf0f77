"""Power cuts under load never take back a reading the platform has seen (CONTRACT 1.1).

The daemon runs on a FUSE filesystem that keeps only synced data
(tests/powercut_fs.py); see tests/powercut.py for the checks. The long run is
benchmarks/bench_power_cut.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.powercut import run_power_cuts

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_power_cuts_under_load_never_take_back_a_published_reading(
    tmp_path: Path, broker: Mosquitto
) -> None:
    report = await run_power_cuts(tmp_path, broker, cuts=4, seed=20261201)
    print(report.summary())
    assert report.problems == []
    assert report.cuts == 4 and report.kills_without_cut >= 1
    assert report.readings_seen > 100, "the devices should have produced readings under load"
    assert report.dropped_bytes > 0, "the cuts should have thrown unsynced writes away"
