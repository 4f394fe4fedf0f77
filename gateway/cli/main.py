"""The command line: ``python -m gateway`` / ``estate-gateway``.

The only module that configures logging and calls ``asyncio.run``; tests call
``main(argv)`` directly. Exit codes: 0 fine, 1 runtime failure, 2 bad usage or
invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.cli import access_commands, operator_commands
from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.outbox.report import NoDatabaseError, read_report
from gateway.runtime.logfmt import setup_logging

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


def _load(path: Path) -> LoadedConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load(args.file)
    if loaded is None:
        return EXIT_INVALID
    config = loaded.config
    print(
        f"{args.file}: ok: gateway {config.gateway.site}/{config.gateway.id}, "
        f"{len(config.devices)} devices, {len(config.mqtt.brokers)} brokers"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_INVALID
    setup_logging(args.log_level or loaded.config.gateway.log_level)
    # A watchdog kill is SIGABRT: dump every thread's stack to the journal first.
    faulthandler.enable()
    try:
        asyncio.run(_run(loaded))
    except ConfigError as exc:  # secrets resolved at start (password_env)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


async def _run(loaded: LoadedConfig) -> None:
    from gateway.runtime.supervisor import (  # noqa: PLC0415 - heavy imports
        Gateway,
        install_reload_signal,
        install_stop_signals,
    )

    stop = asyncio.Event()
    install_stop_signals(stop)
    gateway = Gateway(loaded)
    install_reload_signal(gateway.request_reload)
    await gateway.run(stop)
    _LOGGER.info("gateway stopped")


def cmd_status(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_INVALID
    if args.live:
        from gateway.cli.live_status import run_live  # noqa: PLC0415 - rich loads on demand

        return run_live(loaded, interval_s=args.interval)
    try:
        report = read_report(loaded.data_dir)
    except NoDatabaseError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.DatabaseError as exc:
        print(f"cannot read the outbox database: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(report.to_json() if args.json else report.to_text())
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_INVALID
    setup_logging(args.log_level or "INFO")
    from gateway.cli.simulate import run_simulators  # noqa: PLC0415 - simulators load on demand

    wanted = set(args.device or [])
    devices = [d for d in loaded.config.devices if not wanted or d.id in wanted]
    unknown = wanted - {d.id for d in devices}
    if unknown:
        print(f"no such device in the config: {', '.join(sorted(unknown))}", file=sys.stderr)
        return EXIT_INVALID
    asyncio.run(run_simulators(devices, ambient=not args.quiet))
    return EXIT_OK


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("between 0.05 and 3600 seconds")
    return value


class _TerminalWidthFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the width so that it does not import shutil.

    ``HelpFormatter`` asks ``shutil`` for the terminal size, and every parser
    makes one per ``add_argument``: shutil loads bz2 and lzma, kept resident
    for the daemon's whole life (issue 8's idle memory).
    """

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=max(columns - 2, 20))


class _Parser(argparse.ArgumentParser):
    """Every parser (subcommands too: they take their parent's class) uses that formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _TerminalWidthFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="estate-gateway", description="Edge gateway for smart residential estates."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument("-c", "--config", type=Path, required=True, help="config.yaml")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(run=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (exit 2 when invalid)")
    check.add_argument("file", type=Path)
    check.set_defaults(run=cmd_check_config)

    status = sub.add_parser("status", help="what the local outbox holds")
    status.add_argument("-c", "--config", type=Path, required=True)
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument(
        "--live",
        action="store_true",
        help="refresh in place: devices, broker link and backlog (from the running daemon's "
        "metrics endpoint and the outbox); Ctrl-C to quit",
    )
    status.add_argument(
        "--interval",
        type=_positive_seconds,
        default=1.0,
        help="seconds between refreshes of --live (default 1)",
    )
    status.set_defaults(run=cmd_status)

    simulate = sub.add_parser(
        "simulate", help="run the configured devices' simulators and print their ports"
    )
    simulate.add_argument("-c", "--config", type=Path, required=True)
    simulate.add_argument("--device", action="append", help="only this device (repeatable)")
    simulate.add_argument("--quiet", action="store_true", help="no ambient traffic")
    simulate.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    simulate.set_defaults(run=cmd_simulate)

    operator_commands.add_operator_subcommands(sub)
    access_commands.add_access_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run_async", None) is not None:
        return int(asyncio.run(args.run_async(args)))
    return int(args.run(args))


def main_entry() -> None:
    """Console script ``estate-gateway``."""
    sys.exit(main())
