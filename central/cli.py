"""``estate-central`` / ``python -m central``: the platform's command line.

The only place that configures logging and calls ``asyncio.run`` (STYLE.md §8).
Broker nodes and the database come from flags or the environment
(``ESTATE_AMQP``: comma-separated AMQP URLs of the cluster's nodes;
``ESTATE_DB``: a libpq connection string).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from typing import Any

import psycopg

from central.amqp import INGEST_QUEUE
from central.ingest import IngestConfig, IngestWorker
from central.report import build_report, format_report
from central.schema import migrate

# Access lists, door commands and the reconciler load only for their commands:
# they pull in the gateway's models and cryptography, a third of an ingest
# worker's start-up (0.3 s) otherwise.

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3


def _urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=os.environ.get("ESTATE_DB"), help="libpq DSN (ESTATE_DB)")


def _add_amqp(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--amqp",
        type=_urls,
        default=_urls(os.environ.get("ESTATE_AMQP", "")),
        help="comma-separated AMQP URLs of the broker nodes (ESTATE_AMQP)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="estate-central", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init-db", help="create the tables (every worker also does)")
    _add_db(init)

    ingest = sub.add_parser("ingest", help="run one ingest worker (run several to share load)")
    _add_db(ingest)
    _add_amqp(ingest)
    ingest.add_argument("--queue", default=INGEST_QUEUE, help="the shared ingest queue's name")
    ingest.add_argument("--site", default="*", help="only this estate's gateways (default: all)")
    ingest.add_argument("--prefetch", type=int, default=2000)
    ingest.add_argument("--group-max", type=int, default=500)

    cards = sub.add_parser("cards", help="the estate's access lists")
    cards_sub = cards.add_subparsers(dest="cards_command", required=True)
    imp = cards_sub.add_parser("import", help="make a site's list exactly this file (JSON)")
    imp.add_argument("file")
    imp.add_argument("--site", required=True)
    _add_db(imp)
    rev = cards_sub.add_parser("revoke", help="remove a card from every site's list")
    rev.add_argument("card")
    _add_db(rev)

    rec = sub.add_parser("reconcile", help="send each gate the delta or snapshot it needs")
    rec.add_argument("--key", required=True, help="the platform's private key (PEM, keygen)")
    rec.add_argument("--key-id", required=True)
    rec.add_argument("--resend-s", type=float, default=30.0)
    _add_db(rec)
    _add_amqp(rec)

    door = sub.add_parser("open", help="sign and send door.open, wait for the result")
    door.add_argument("gateway")
    door.add_argument("door")
    door.add_argument("--site", required=True)
    door.add_argument("--key", required=True, help="the platform's private key (PEM, keygen)")
    door.add_argument("--key-id", required=True)
    door.add_argument("--hold-seconds", type=int, default=5)
    door.add_argument("--timeout", type=float, default=10.0)
    _add_amqp(door)

    report = sub.add_parser("report", help="per gate: complete, missing, explained")
    _add_db(report)
    report.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r",
    )
    if args.command == "open":
        return asyncio.run(_run_open(args))
    if not args.db:
        print("error: no database: give --db or set ESTATE_DB", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "init-db":
        with psycopg.connect(args.db) as conn:
            migrate(conn)
        return EXIT_OK
    if args.command == "ingest":
        if not args.amqp:
            print("error: no broker: give --amqp or set ESTATE_AMQP", file=sys.stderr)
            return EXIT_USAGE
        config = IngestConfig(
            amqp_urls=args.amqp,
            dsn=args.db,
            queue=args.queue,
            site=args.site,
            prefetch=args.prefetch,
            group_max=args.group_max,
        )
        return asyncio.run(_run_ingest(config))
    if args.command == "cards":
        return _run_cards(args)
    if args.command == "reconcile":
        if not args.amqp:
            print("error: no broker: give --amqp or set ESTATE_AMQP", file=sys.stderr)
            return EXIT_USAGE
        from central.reconcile import Reconciler  # noqa: PLC0415 - loads on demand
        from gateway.cli.operator_tools import load_private_key  # noqa: PLC0415

        try:
            key = load_private_key(args.key)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with psycopg.connect(args.db) as conn:
            migrate(conn)
        reconciler = Reconciler(
            dsn=args.db,
            amqp_urls=args.amqp,
            private_key=key,
            key_id=args.key_id,
            resend_s=args.resend_s,
        )
        return asyncio.run(_until_signal(reconciler.run(), reconciler.stop))
    if args.command == "report":
        with psycopg.connect(args.db) as conn:
            migrate(conn)
            result = build_report(conn)
        if args.json:
            print(
                json.dumps(
                    {
                        "epochs": [asdict(e) | {"complete": e.complete} for e in result.epochs],
                        "conflicts": [list(c) for c in result.conflicts],
                    }
                )
            )
        else:
            print(format_report(result))
        return EXIT_OK if result.complete else EXIT_INCOMPLETE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


async def _run_open(args: argparse.Namespace) -> int:
    if not args.amqp:
        print("error: no broker: give --amqp or set ESTATE_AMQP", file=sys.stderr)
        return EXIT_USAGE
    from central.commands import OPEN_TTL_S, send_and_wait  # noqa: PLC0415 - loads on demand
    from gateway.cli.operator_tools import CommandOrder  # noqa: PLC0415

    try:
        params = {"hold_seconds": args.hold_seconds}
        order = CommandOrder(args.gateway, "door.open", args.door, params, args.key_id, OPEN_TTL_S)
        outcome = await send_and_wait(
            args.amqp, order, key_file=args.key, site=args.site, timeout_s=args.timeout
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if outcome.result is None:
        print(
            f"error: no result for id={outcome.command_id} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    print(f"result: {json.dumps(outcome.result, ensure_ascii=False)}")
    print(f"round-trip: {outcome.round_trip_ms:.1f} ms")
    return EXIT_OK if outcome.result.get("status") == "done" else EXIT_INCOMPLETE


def _run_cards(args: argparse.Namespace) -> int:
    from central.cards import import_list, read_import, revoke  # noqa: PLC0415 - on demand

    with psycopg.connect(args.db) as conn:
        migrate(conn)
        if args.cards_command == "import":
            try:
                records, profiles = read_import(args.file)
            except (OSError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            version = import_list(conn, args.site, records, profiles)
            print(f"site={args.site} cards={len(records)} version={version}")
            return EXIT_OK
        try:
            changed = revoke(conn, args.card)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not changed:
            print(f"card {args.card} is in no list", file=sys.stderr)
            return EXIT_INCOMPLETE
        for site, version in changed:
            print(f"revoked site={site} version={version}")
        return EXIT_OK


async def _until_signal(main: Coroutine[Any, Any, None], stop: Callable[[], None]) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    await main
    return EXIT_OK


async def _run_ingest(config: IngestConfig) -> int:
    worker = IngestWorker(config)
    return await _until_signal(worker.run(), worker.stop)


def main_entry() -> None:
    sys.exit(main())
