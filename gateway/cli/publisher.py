"""The arguments every signing tool shares: which broker, which gateway, which key.

``send-command`` and ``access-push`` both sign messages for one gateway and
publish them over MQTT; they take the same connection and key arguments,
registered and read here once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypedDict

from gateway.uplink.broker import DEFAULT_TOPIC_ROOT

# Exit codes of the publishing tools (``send-command``, ``access-push``).
EXIT_OK = 0
EXIT_NOT_DONE = 1  # the gateway answered rejected or failed
EXIT_USAGE = 2  # bad arguments or key
EXIT_TIMEOUT = 3  # no answer in time
EXIT_MQTT = 4  # broker unreachable or refused


class PublisherArgs(TypedDict):
    """Where a signing tool publishes, and with which key (``send_command``, ``access_push``)."""

    broker: str
    key_file: Path
    key_id: str
    site: str
    gateway: str
    topic_root_template: str | None
    timeout_s: float
    ca_file: Path | None
    username: str | None
    password_file: Path | None


def add_publisher_arguments(
    parser: argparse.ArgumentParser, *, ca_flag: str, timeout_s: float
) -> None:
    """The arguments of ``PublisherArgs``, shared by ``send-command`` and ``access-push``.

    ``ca_flag`` keeps each tool's documented spelling (``--ca``, ``--ca-file``).
    """
    parser.add_argument("--broker", required=True, help="mqtt://host[:port] or mqtts://host[:port]")
    parser.add_argument("--key", required=True, type=Path, help="private key PEM from keygen")
    parser.add_argument("--key-id", required=True, help="the key's name in the gateway's config")
    parser.add_argument("--site", required=True)
    parser.add_argument("--gateway", required=True, help="gateway id")
    parser.add_argument(
        "--topic-root", default=None, help=f"topic root template (default {DEFAULT_TOPIC_ROOT})"
    )
    parser.add_argument("--timeout", type=float, default=timeout_s, help="seconds")
    parser.add_argument(
        ca_flag, dest="ca_file", type=Path, default=None, help="CA file for mqtts (default: system)"
    )
    parser.add_argument("--username", default=None)
    parser.add_argument("--password-file", type=Path, default=None)


def publisher_args(args: argparse.Namespace) -> PublisherArgs:
    """The ``PublisherArgs`` of parsed arguments (``add_publisher_arguments``)."""
    return PublisherArgs(
        broker=args.broker,
        key_file=args.key,
        key_id=args.key_id,
        site=args.site,
        gateway=args.gateway,
        topic_root_template=args.topic_root,
        timeout_s=args.timeout,
        ca_file=args.ca_file,
        username=args.username,
        password_file=args.password_file,
    )
