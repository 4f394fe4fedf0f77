"""Shared fixtures: real mosquittos on free loopback ports.

``broker`` is a test's own mosquitto, for tests that stop and start it (an
outage). ``shared_broker`` is one mosquitto for the whole session, lent to each
test with a gateway id of its own: its topic root and MQTT client ids then
belong to that test alone, so no test sees another's messages or sessions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto, SharedBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


@pytest.fixture(scope="session")
def session_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


@pytest.fixture
def shared_broker(session_mosquitto: Mosquitto, request: pytest.FixtureRequest) -> SharedBroker:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return SharedBroker(session_mosquitto, f"gw-{digest}")
