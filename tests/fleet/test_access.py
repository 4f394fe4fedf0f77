"""Cards in PostgreSQL reach every gate: snapshot first, then deltas (issue 12).

The reconciler, the ingest workers and ``cards import``/``cards revoke`` run
as real processes on a real RabbitMQ cluster; the gates are AccessGate
clients that follow CONTRACT.md "Access lists" (see access_gate.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import psycopg
import pytest

from central.access import digest
from central.cards import gate_list
from gateway.cli.operator_tools import keygen
from tests.cluster import RabbitCluster
from tests.fakes import wait_until
from tests.fleet.access_gate import AccessGate
from tests.fleet.processes import CentralProcess
from tests.fleet.test_ingest import start_workers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAY = {
    "weekly": {"mon": [["06:00", "23:00"]], "sat": [["08:00", "12:00"], ["14:00", "24:00"]]},
    "closed_dates": ["2026-12-31"],
}


def cli(workdir: Path, name: str, *args: str) -> str:
    proc = CentralProcess(workdir / f"{name}.log", *args)
    proc.start()
    assert proc.wait(60) == 0, proc.output()
    return proc.output()


def import_cards(workdir: Path, name: str, listing: object, site: str, dsn: str) -> str:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(listing))
    return cli(workdir, name, "cards", "import", str(path), "--site", site, "--db", dsn)


def reported_digest(dsn: str, site: str, gateway: str) -> str | None:
    """The digest the platform last stored from the gate's ``access/state``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT digest FROM access_state WHERE site = %s AND gateway = %s", (site, gateway)
        ).fetchone()
    return None if row is None else str(row[0])


def assert_digests(dsn: str, site: str, gates: list[AccessGate]) -> None:
    """What each gate holds is what the platform means it to hold (the contract's digest)."""
    with psycopg.connect(dsn) as conn:
        for gate in gates:
            assert digest(*gate_list(conn, site, gate.gateway)) == gate.digest


async def test_cards_reach_every_gate_by_snapshot_then_delta(
    rabbit: RabbitCluster, dsn: str, site: str, workdir: Path
) -> None:
    key_id, _, public_b64 = keygen(workdir / "keys", key_id="platform").partition(": ")
    public = base64.b64decode(public_b64)
    workers = await start_workers(workdir, rabbit, dsn, site)
    reconciler = CentralProcess(
        workdir / "reconcile.log",
        "reconcile",
        "--db",
        dsn,
        "--amqp",
        ",".join(rabbit.amqp_urls),
        "--key",
        str(workdir / "keys" / "platform.pem"),
        "--key-id",
        key_id,
    )
    gates = [AccessGate(rabbit.nodes[i].mqtt_port, site, f"g{i + 1}", public) for i in range(2)]
    try:
        reconciler.start()
        await reconciler.wait_for_log("reconciler listening", 60)
        for gate in gates:
            await gate.start()
        listing = {
            "profiles": {"day": DAY},
            "cards": [
                {"card": "04a1b2c3", "holder": "r-1"},
                {"card": "0004A1B2C4", "doors": ["door-east-1"], "profile": "day"},
                {
                    "card": "E2801160600002054A3B",
                    "until": "2027-06-30T16:00:00.000Z",
                    "gateways": ["g1"],
                },
            ],
        }
        assert "version=1" in import_cards(workdir, "import", listing, site, dsn)
        for gate in gates:
            await gate.wait_version(1)
        g1, g2 = gates
        assert sorted(g1.cards) == ["04A1B2C3", "04A1B2C4", "E2801160600002054A3B"]
        assert sorted(g2.cards) == ["04A1B2C3", "04A1B2C4"]  # the third is g1's only
        assert g1.received[0]["type"] == "access.snapshot" and g1.profiles == {"day": DAY}
        assert_digests(dsn, site, gates)

        cli(workdir, "revoke", "cards", "revoke", "04A1B2C3", "--db", dsn)
        for gate in gates:
            await gate.wait_version(2)
            last = gate.received[-1]
            assert (last["type"], last["base"], last["delete"]) == ("access.delta", 1, ["04A1B2C3"])
            assert "04A1B2C3" not in gate.cards

        # g2 reports a list that is not what it was sent: it gets a snapshot.
        await g2.stop()
        g2.digest_override = "0" * 64
        await g2.start()
        # The next change must find that report stored (an ingest worker writes
        # it), or the reconciler rightly plans a delta from what it last sent.
        await wait_until(lambda: reported_digest(dsn, site, "g2") == "0" * 64, 30, every=0.2)
        # g1 is away while the next change is made: its session keeps the message.
        await g1.stop()
        listing["cards"] = listing["cards"][1:]  # drops 04A1B2C3 (gone already): no change
        listing["cards"].append({"card": "04BEEF", "holder": "r-2"})
        assert "version=3" in import_cards(workdir, "import2", listing, site, dsn)
        await g2.wait_version(3)
        assert g2.received[-1]["type"] == "access.snapshot"
        assert sorted(g2.cards) == ["04A1B2C4", "04BEEF"]
        await g1.start()
        await g1.wait_version(3)
        assert g1.received[-1]["type"] == "access.delta"
        assert sorted(g1.cards) == ["04A1B2C4", "04BEEF", "E2801160600002054A3B"]
        assert_digests(dsn, site, gates)
    finally:
        for gate in gates:
            await gate.stop()
        reconciler.kill()
        for worker in workers:
            worker.kill()
