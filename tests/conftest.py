"""Shared fixtures: a real mosquitto per test that needs one (it may be stopped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()
