"""The reopen backoff (STYLE.md §5): capped, exponential, full jitter, reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.transports.backoff import Backoff


def test_ceilings_double_up_to_the_cap() -> None:
    b = Backoff(initial_s=0.1, cap_s=1.0, jitter=False)
    assert [round(next(b), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.attempt == 6
    b.reset()
    assert next(b) == pytest.approx(0.1)


@given(st.integers(0, 200), st.integers(0, 2**32))
def test_full_jitter_stays_within_ceiling(attempts: int, seed: int) -> None:
    b = Backoff(initial_s=0.5, cap_s=30.0, rng=random.Random(seed))
    for _ in range(attempts):
        ceiling = b.ceiling()
        delay = next(b)
        assert 0.0 <= delay <= ceiling <= 30.0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(initial_s=2, cap_s=1)
