"""The ``access-push`` and ``access-show`` subcommands' arguments; the tools load when run.

Every ``estate-gateway`` start builds the whole parser, the daemon's too:
importing ``access_tools`` here would load the list builder and the access
message models into a gate that reads its cards from a file (issue 8's idle
memory), so the runners import it on use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.publisher import EXIT_USAGE, add_publisher_arguments, publisher_args

DEFAULT_TIMEOUT_S = 60.0


def add_access_subcommands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``access-push`` (sets ``run_async``) and ``access-show`` (sets ``run``)."""
    push = subparsers.add_parser(
        "access-push", help="sign and publish an access list (snapshot or delta), wait for it"
    )
    add_publisher_arguments(push, ca_flag="--ca-file", timeout_s=DEFAULT_TIMEOUT_S)
    what = push.add_mutually_exclusive_group(required=True)
    what.add_argument("--snapshot", type=Path, help="the whole list (CSV or JSON)")
    what.add_argument("--delta", type=Path, help="changes against --base (CSV or JSON)")
    push.add_argument("--base", type=int, help="the version a delta applies to")
    push.add_argument("--version", type=int, required=True, help="the version this makes")
    push.set_defaults(run_async=run_access_push)

    show = subparsers.add_parser(
        "access-show", help="the access list this gateway holds; a card's decision now"
    )
    show.add_argument("-c", "--config", type=Path, required=True)
    show.add_argument("--card", default=None, help="a card id (hex)")
    show.set_defaults(run=run_access_show)


async def run_access_push(args: argparse.Namespace) -> int:
    if (args.delta is not None) != (args.base is not None):
        print("access-push: --base goes with --delta (and only with it)", file=sys.stderr)
        return EXIT_USAGE
    from gateway.cli.access_tools import access_push  # noqa: PLC0415 - module docstring

    return await access_push(
        **publisher_args(args),
        list_file=args.delta if args.delta is not None else args.snapshot,
        version=args.version,
        base=args.base,
    )


def run_access_show(args: argparse.Namespace) -> int:
    from gateway.cli.access_tools import access_show  # noqa: PLC0415 - module docstring

    return access_show(args.config, args.card)
