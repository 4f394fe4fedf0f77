"""No card id, tag EPC or band MAC reaches the daemon's log whole, even at DEBUG.

The real daemon runs with its simulated door node, UHF reader and BLE receiver
(their ambient residents, bikes and bands) at ``log_level: DEBUG``, the lowest
it offers. Every identifier that went into a stored reading, and every band MAC
of the config, is then looked for in its whole log output (STYLE.md §6, README
"Logs": card ids and band MACs only at DEBUG, masked).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

import pytest

from drivers.access import mask_card
from tests.broker import Mosquitto
from tests.daemon import Daemon, simulated_devices, write_config
from tests.subscriber import Subscriber, subscribed

pytestmark = pytest.mark.integration

WAIT_S = 60.0
"""The ambient door swipes about every 4 s, a bike passes about every 6 s: room on a loaded box."""


def recorded(sub: Subscriber, database: Path, type_: str, key: str) -> set[str]:
    """``data[key]`` of the readings of ``type_``: those published, and those still stored."""
    data = [r["data"] for r in sub.readings() if r["type"] == type_]
    db = sqlite3.connect(database)
    try:
        for table in ("routine", "alarm"):
            rows = db.execute(f"SELECT data FROM {table} WHERE type = ?", (type_,))
            data += [json.loads(row) for (row,) in rows]
    finally:
        db.close()
    return {str(d[key]) for d in data if d.get(key) is not None}


def published(sub: Subscriber, type_: str, key: str) -> bool:
    return any(r["type"] == type_ and r["data"].get(key) for r in sub.readings())


def spellings(identifier: str) -> set[str]:
    """The forms a leak could take: as stored, lower case, a MAC with colons."""
    forms = {identifier.upper(), identifier.lower()}
    if len(identifier) == 12:
        pairs = [identifier[i : i + 2] for i in range(0, 12, 2)]
        forms |= {":".join(pairs).upper(), ":".join(pairs).lower()}
    return forms


async def test_identifiers_are_never_logged_whole_at_debug(
    tmp_path: Path, broker: Mosquitto
) -> None:
    devices = simulated_devices(temperature_gates=0)
    (band_receiver,) = [d for d in devices if d["kind"] == "ble_receiver"]
    macs = set(band_receiver["wearers"])
    config = write_config(
        tmp_path / "gw" / "config.yaml",
        brokers=[broker.url],
        devices=devices,
        gateway={
            "site": "changqing",
            "id": "north-gate-1",
            "data_dir": "data",
            "log_level": "DEBUG",
        },
    )
    daemon = Daemon(config)
    async with subscribed(broker.port, "estates/changqing/gateways/north-gate-1") as sub:
        daemon.start()
        try:
            # Each kind's DEBUG line is written, so the check below has something to bite on.
            await daemon.wait_for_log("door card: device=door-east-1", timeout=WAIT_S)
            await daemon.wait_for_log("pass device=ebike-reader-1", timeout=WAIT_S)
            await daemon.wait_for_log("band heard device=band-receiver-1", timeout=WAIT_S)
            await sub.wait_for(lambda: published(sub, "door.event", "card"), timeout=WAIT_S)
            await sub.wait_for(lambda: published(sub, "ebike.pass", "epc"), timeout=WAIT_S)
            daemon.signal(signal.SIGTERM)  # a clean stop flushes every reading to the outbox
            assert await asyncio.to_thread(daemon.wait, 30) == 0, daemon.output()
        finally:
            daemon.stop()
    log = daemon.output()
    cards = recorded(sub, daemon.database, "door.event", "card")
    epcs = recorded(sub, daemon.database, "ebike.pass", "epc")
    assert cards and epcs, (cards, epcs)
    for identifier in cards | epcs | macs:
        for form in spellings(identifier):
            assert form not in log, f"{form} is in the daemon's log"
    assert any(mask_card(card) in log for card in cards), "the masked card is logged"
