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
from collections.abc import Sequence
from dataclasses import asdict

import psycopg

from central.amqp import INGEST_QUEUE
from central.commands import send_and_wait
from central.ingest import IngestConfig, IngestWorker
from central.report import build_report, format_report
from central.schema import migrate
from central.store import WriteMode

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
    ingest.add_argument("--write", choices=[m.value for m in WriteMode], default="copy")

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
            write=WriteMode(args.write),
        )
        return asyncio.run(_run_ingest(config))
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
    try:
        outcome = await send_and_wait(
            args.amqp,
            key_file=args.key,
            key_id=args.key_id,
            site=args.site,
            gateway=args.gateway,
            action="door.open",
            device=args.door,
            params={"hold_seconds": args.hold_seconds},
            timeout_s=args.timeout,
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


async def _run_ingest(config: IngestConfig) -> int:
    worker = IngestWorker(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    await worker.run()
    return EXIT_OK


def main_entry() -> None:
    sys.exit(main())
