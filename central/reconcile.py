"""The access reconciler: brings every gate's access list to the site's current version.

It reads each gate's ``access/state`` (kept current by the ingest workers in
``access_state``) and, for a gate behind the site's version, sends the delta
from the version it holds, or a snapshot when a delta is impossible: the gate
holds nothing yet, holds a list whose digest is not one the platform sent,
answered ``base_mismatch``, or too much changed for one message (CONTRACT.md
"Access lists"). What was sent (version and digest) is recorded so the next
delta can be based on it. It wakes on ``NOTIFY access_changed`` (a card
import or revoke, or a new access state from a gate) and polls as a fallback.

Messages go to ``{root}/access`` at QoS 1 and are not retained: a gate that is
away finds them in its persistent session (a quorum queue on RabbitMQ) when
it returns. A send not answered within ``resend_s`` is sent again; the gate
ignores versions it already holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import access, amqp
from central.cards import changes_since, gate_list, site_version
from gateway.uplink.broker import topic_root

_LOGGER = logging.getLogger(__name__)

LIST_CACHE_SIZE = 64  # distinct (site, version, gate-only cards) lists kept

_BEHIND = """
SELECT s.site, s.gateway, s.version, s.digest, s.body, v.version,
       sent.kind, sent.sent_at > now() - make_interval(secs => %s)
FROM access_state s
JOIN access_version v USING (site)
LEFT JOIN access_sent sent
  ON sent.site = s.site AND sent.gateway = s.gateway AND sent.version = v.version
WHERE s.version < v.version
ORDER BY s.site, s.gateway
"""
_SENT_DIGEST = "SELECT digest FROM access_sent WHERE site = %s AND gateway = %s AND version = %s"
_RECORD = """
INSERT INTO access_sent (site, gateway, version, digest, kind) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (site, gateway, version) DO UPDATE SET digest = EXCLUDED.digest,
    kind = EXCLUDED.kind, sent_at = now()
"""


@dataclass(frozen=True, slots=True)
class Send:
    site: str
    gateway: str
    version: int
    digest: str
    kind: str  # "delta" or "snapshot"
    payloads: tuple[bytes, ...]


class Reconciler:
    def __init__(
        self,
        *,
        dsn: str,
        amqp_urls: Sequence[str],
        private_key: Ed25519PrivateKey,
        key_id: str,
        resend_s: float = 30.0,
        poll_s: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._urls = amqp_urls
        self._key = private_key
        self._key_id = key_id
        self._resend_s = resend_s
        self._poll_s = poll_s
        self._stop = asyncio.Event()
        self.sent = 0
        self._lists: dict[
            tuple[str, int, tuple[str, ...]], tuple[list[access.Entry], access.Profiles, str]
        ] = {}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        node, attempt = 0, 0
        while not self._stop.is_set():
            try:
                conn, node = await amqp.connect(self._urls, start=node)
                async with conn:
                    channel = await conn.channel()
                    attempt = 0
                    await self._serve(channel)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, psycopg.Error) as exc:
                _LOGGER.warning("reconciler session ended: error=%r", exc)
                node += 1
                await amqp.sleep_backoff(attempt)
                attempt += 1

    async def _serve(self, channel: aio_pika.abc.AbstractChannel) -> None:
        with (
            psycopg.connect(self._dsn, autocommit=True) as listen,
            psycopg.connect(self._dsn, autocommit=True) as db,
        ):
            listen.execute("LISTEN access_changed")
            _LOGGER.info("reconciler listening")
            while not self._stop.is_set():
                await self.pass_once(channel, db)
                await asyncio.to_thread(self._wait_notify, listen)

    def _wait_notify(self, listen: psycopg.Connection[Any]) -> None:
        for _ in listen.notifies(timeout=self._poll_s, stop_after=1):
            pass
        # Drain what else came meanwhile: one pass serves them all.
        for _ in listen.notifies(timeout=0.01):
            pass

    async def pass_once(
        self, channel: aio_pika.abc.AbstractChannel, db: psycopg.Connection[Any]
    ) -> int:
        """Send what every gate behind needs; return how many gates were sent to.

        Each gate is sent to as soon as its messages are built, not after all
        gates' (a revoke reaches the first gates while the last are built).
        """
        rows = await asyncio.to_thread(lambda: db.execute(_BEHIND, (self._resend_s,)).fetchall())
        sent = 0
        for row in rows:
            plan = await asyncio.to_thread(self._plan, db, row)
            if plan is None:
                continue
            root = topic_root(plan.site, plan.gateway)
            for payload in plan.payloads:
                await amqp.publish(channel, f"{root}/access", payload)
            await asyncio.to_thread(
                db.execute, _RECORD, (plan.site, plan.gateway, plan.version, plan.digest, plan.kind)
            )
            sent += 1
            self.sent += 1
            _LOGGER.info(
                "access sent: site=%s gateway=%s version=%d kind=%s messages=%d",
                plan.site,
                plan.gateway,
                plan.version,
                plan.kind,
                len(plan.payloads),
            )
        return sent

    def _plan(self, db: psycopg.Connection[Any], row: tuple[Any, ...]) -> Send | None:
        site, gateway, held, held_digest, state, version, kind, recent = row
        error = state.get("last_error") or {}
        mismatch = error.get("reason") == "base_mismatch" and error.get("version") == version
        if recent and not (mismatch and kind == "delta"):
            return None  # sent lately: give the gate time to answer
        # One snapshot of the tables for everything this gate is sent.
        with db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return self._build(
                db,
                site=site,
                gateway=gateway,
                held=held,
                held_digest=held_digest,
                version=version,
                mismatch=mismatch,
            )

    def _gate_list(
        self, conn: psycopg.Connection[Any], site: str, gateway: str
    ) -> tuple[list[access.Entry], access.Profiles, str]:
        """The gate's list and digest; gates given the same cards share one computation."""
        own = tuple(
            row[0]
            for row in conn.execute(
                "SELECT card FROM cards WHERE site = %s AND gateways IS NOT NULL "
                "AND %s = ANY(gateways) ORDER BY card",
                (site, gateway),
            )
        )
        version = site_version(conn, site)
        key = (site, version, own)
        if key not in self._lists:
            if len(self._lists) > LIST_CACHE_SIZE:
                self._lists.clear()
            cards, profiles = gate_list(conn, site, gateway)
            self._lists[key] = (cards, profiles, access.digest(cards, profiles))
        return self._lists[key]

    def _build(
        self,
        conn: psycopg.Connection[Any],
        *,
        site: str,
        gateway: str,
        held: int,
        held_digest: str,
        version: int,
        mismatch: bool,
    ) -> Send:
        cards, profiles, want_digest = self._gate_list(conn, site, gateway)
        row = conn.execute(_SENT_DIGEST, (site, gateway, held)).fetchone()
        knows_base = held > 0 and row is not None and row[0] == held_digest
        if knows_base and not mismatch:
            changed_cards, changed_profiles = changes_since(conn, site, held)
            by_card = {c["card"]: c for c in cards}
            try:
                message = access.delta(
                    gateway,
                    base=held,
                    version=version,
                    upsert=[by_card[c] for c in changed_cards if c in by_card],
                    delete=[c for c in changed_cards if c not in by_card],
                    profiles={p: profiles[p] for p in changed_profiles if p in profiles},
                    delete_profiles=[p for p in changed_profiles if p not in profiles],
                    key_id=self._key_id,
                )
                payload = access.signed_payload(message, self._key)
                return Send(site, gateway, version, want_digest, "delta", (payload,))
            except ValueError:
                pass  # too large for one delta: a snapshot instead
        parts = access.snapshot(
            gateway, version=version, cards=cards, profiles=profiles, key_id=self._key_id
        )
        payloads = tuple(access.signed_payload(part, self._key) for part in parts)
        return Send(site, gateway, version, want_digest, "snapshot", payloads)
