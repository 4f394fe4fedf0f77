"""The ``keygen`` and ``send-command`` subcommands' arguments; the tools load when run.

Every ``estate-gateway`` start builds the whole parser, the daemon's too:
``operator_tools`` (key files, the signed command's MQTT round trip) is
imported by the runners on use, as ``access_commands`` does for the access
tools, so ``python -m gateway run`` never loads it (issue 8's idle memory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.publisher import EXIT_OK, EXIT_USAGE, add_publisher_arguments, publisher_args

DEFAULT_KEY_ID = "operator"
DEFAULT_TTL_S = 30.0  # well inside the gateway's default max_ttl_s of 60
DEFAULT_TIMEOUT_S = 10.0


def add_operator_subcommands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``keygen`` (sets ``run``) and ``send-command`` (sets ``run_async``)."""
    keygen_parser = subparsers.add_parser(
        "keygen", help="make an Ed25519 key pair for signing commands"
    )
    keygen_parser.add_argument("--out", required=True, type=Path, help="directory for the keys")
    keygen_parser.add_argument(
        "--key-id", default=DEFAULT_KEY_ID, help="name of the key in commands.public_keys"
    )
    keygen_parser.set_defaults(run=run_keygen)

    send = subparsers.add_parser("send-command", help="sign and publish one command")
    add_publisher_arguments(send, ca_flag="--ca", timeout_s=DEFAULT_TIMEOUT_S)
    send.add_argument("--action", required=True, help="door.open, door.set_mode, gateway.ping")
    send.add_argument("--device", required=True, help="device id (the gateway id for a ping)")
    send.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="parameter, repeatable"
    )
    send.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="lifetime, seconds")
    send.add_argument("--wait", action="store_true", help="wait for the result and print it")
    send.set_defaults(run_async=run_send_command)


def run_keygen(args: argparse.Namespace) -> int:
    """``keygen`` subcommand: print the public_keys line."""
    from gateway.cli.operator_tools import keygen  # noqa: PLC0415 - module docstring

    try:
        line = keygen(args.out, key_id=args.key_id)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"private key: {Path(args.out) / (args.key_id + '.pem')} (keep it off the gateway)")
    print("add to the gateway config under commands.public_keys:")
    print(f"  {line}")
    return EXIT_OK


async def run_send_command(args: argparse.Namespace) -> int:
    """``send-command`` subcommand."""
    from gateway.cli.operator_tools import parse_params, send_command  # noqa: PLC0415

    try:
        params = parse_params(args.param)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return await send_command(
        **publisher_args(args),
        action=args.action,
        device=args.device,
        params=params,
        ttl_s=args.ttl,
        wait=args.wait,
    )
