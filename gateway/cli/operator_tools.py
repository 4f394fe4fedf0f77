"""Operator tools for signed commands: ``keygen`` and ``send-command``.

These run on an operator's or the platform's machine, never as part of the
daemon: the gateway holds only public keys (CONTRACT.md, "Commands").

- ``keygen`` makes an Ed25519 key pair: ``<key_id>.pem`` (PKCS#8 private
  key, mode 0600, never overwritten) and ``<key_id>.pub`` (base64 of the raw
  32-byte public key), and returns the line to paste under
  ``commands.public_keys`` (``<key_id>: <base64>``).
- ``send_command`` builds a command, signs ``canonical_bytes`` of it (the
  same function the gateway verifies with), and publishes it at QoS 1 to
  ``{root}/commands`` with the MQTT 5 message expiry interval set to its
  remaining lifetime. With ``wait`` it subscribes to
  ``{root}/commands/results`` and to a response topic of its own
  (``{root}/commands/results/<nonce>``, with the command id as correlation
  data) before publishing, and prints the first result bearing its id and
  the round-trip time.

Exit codes of ``send_command``: 0 sent (or, with ``wait``, status ``done``),
1 result ``rejected`` or ``failed``, 2 bad arguments or key, 3 no result
within the timeout, 4 MQTT error (broker unreachable, refused).

Their arguments are registered by ``operator_commands``, which imports this
module only when one of them runs (the daemon's start builds the same parser).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import ssl
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.base import Clock, SystemClock
from gateway.cli.operator_commands import DEFAULT_KEY_ID, DEFAULT_TIMEOUT_S, DEFAULT_TTL_S
from gateway.cli.publisher import EXIT_MQTT, EXIT_NOT_DONE, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE
from gateway.commands.model import (
    KEY_ID_PATTERN,
    NAME_PATTERN,
    sign,
)
from gateway.timefmt import rfc3339_ms
from gateway.uplink.broker import (
    BrokerUrl,
    make_tls_context,
    parse_broker_url,
    topic_root,
)
from gateway.uplink.mqtt_adapter import set_nodelay

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# ``cryptography`` (about 7 MB resident) is imported in the functions that use
# keys: ``python -m gateway run`` builds this module's parsers and must not pay for it.


_INT_RE = re.compile(r"^[+-]?\d+$", re.ASCII)
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$", re.ASCII)
_KEY_ID_RE = re.compile(KEY_ID_PATTERN, re.ASCII)
_NAME_RE = re.compile(NAME_PATTERN, re.ASCII)


# --- keys ----------------------------------------------------------------------


def keygen(out_dir: Path | str, *, key_id: str = DEFAULT_KEY_ID) -> str:
    """Create an Ed25519 key pair in ``out_dir``; return ``"<key_id>: <base64 public key>"``.

    Raises:
        ValueError: ``key_id`` is not a valid key id.
        FileExistsError: a key of that name is already there (never overwritten).
    """
    if not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"key id must match {KEY_ID_PATTERN}")
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_b64 = public_key_b64(private_key)
    # O_EXCL with mode 0600: the private key is never readable by others, not
    # even for the instant between create and chmod.
    fd = os.open(out / f"{key_id}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    (out / f"{key_id}.pub").write_text(public_b64 + "\n", encoding="ascii")
    return f"{key_id}: {public_b64}"


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key: the form ``commands.public_keys`` takes."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Load a PEM private key written by ``keygen``.

    Raises:
        OSError: unreadable file.
        ValueError: not a PEM Ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


# --- commands ------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, Any]:
    """Parse ``k=v`` into a param: ``true``/``false`` -> bool, integers, floats, else string.

    Raises:
        ValueError: no ``=`` or an empty name.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"param must be name=value, got {text!r}")
    value: Any
    if raw in ("true", "false"):
        value = raw == "true"
    elif _INT_RE.fullmatch(raw):
        value = int(raw)
    elif _FLOAT_RE.fullmatch(raw):
        value = float(raw)
    else:
        value = raw
    return name, value


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """Parse several ``k=v`` items; a name given twice is an error."""
    params: dict[str, Any] = {}
    for item in items:
        name, value = parse_param(item)
        if name in params:
            raise ValueError(f"param {name!r} given twice")
        params[name] = value
    return params


@dataclass(frozen=True, slots=True)
class CommandOrder:
    """What an operator asks of one device: a command before its id, time and signature."""

    gateway: str
    action: str
    device: str
    params: Mapping[str, Any]
    key_id: str
    ttl_s: float

    def unsigned(self, *, command_id: str, issued_at: float) -> dict[str, Any]:
        """The command object issued at ``issued_at``, timestamps in whole milliseconds."""
        issued_ms = math.floor(issued_at * 1000)
        expires_ms = issued_ms + math.floor(self.ttl_s * 1000)
        return {
            "v": 1,
            "id": command_id,
            "gateway": self.gateway,
            "action": self.action,
            "device": self.device,
            "params": dict(self.params),
            "issued_at": rfc3339_ms(issued_ms),
            "expires_at": rfc3339_ms(expires_ms),
            "key_id": self.key_id,
        }

    def signed(
        self, private_key: Ed25519PrivateKey, *, command_id: str, issued_at: float
    ) -> dict[str, Any]:
        """The command object issued at ``issued_at``, signed with ``private_key``."""
        return sign(self.unsigned(command_id=command_id, issued_at=issued_at), private_key)


def build_command(
    *,
    command_id: str,
    gateway: str,
    action: str,
    device: str,
    params: Mapping[str, Any],
    key_id: str,
    issued_at: float,
    ttl_s: float,
) -> dict[str, Any]:
    """The unsigned command object (CONTRACT.md), timestamps in whole milliseconds."""
    order = CommandOrder(gateway, action, device, params, key_id, ttl_s)
    return order.unsigned(command_id=command_id, issued_at=issued_at)


def encode_command(command: Mapping[str, Any]) -> bytes:
    """The payload to publish: compact UTF-8 JSON (any key order verifies)."""
    return json.dumps(command, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- MQTT ------------------------------------------------------------------------


async def send_command(
    *,
    broker: str,
    key_file: Path | str,
    key_id: str,
    site: str,
    gateway: str,
    action: str,
    device: str,
    params: Mapping[str, Any],
    ttl_s: float = DEFAULT_TTL_S,
    wait: bool = False,
    topic_root_template: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ca_file: Path | str | None = None,
    username: str | None = None,
    password_file: Path | str | None = None,
    command_id: str | None = None,
    clock: Clock | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Sign and publish one command; with ``wait``, print its result. Return an exit code."""
    clock = clock or SystemClock()
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        _check_name("site", site)
        _check_name("gateway", gateway)
        if not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"key id must match {KEY_ID_PATTERN}")
        if not 0 < ttl_s <= 3600:
            raise ValueError("ttl must be in (0, 3600] seconds")
        inputs = _load_inputs(broker, key_file, ca_file, password_file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    address, private_key, password, tls_context = inputs

    command_id = command_id or str(uuid.uuid4())
    root = topic_root(site, gateway, topic_root_template)
    results_topic = f"{root}/commands/results"
    response_topic = f"{results_topic}/{uuid.uuid4().hex}"
    now = clock.wall()
    order = CommandOrder(gateway, action, device, params, key_id, ttl_s)
    command = order.signed(private_key, command_id=command_id, issued_at=now)
    expires_at = now + ttl_s

    try:
        async with aiomqtt.Client(
            address.host,
            address.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            username=username,
            password=password,
            tls_context=tls_context,
            timeout=timeout_s,
        ) as client:
            set_nodelay(client)
            if wait:
                # Subscribe before publishing: the result may come back at once.
                await client.subscribe(results_topic, qos=1)
                await client.subscribe(response_topic, qos=1)
            # The broker drops the command once it could no longer be valid:
            # the expiry is its remaining lifetime, measured after connecting.
            remaining_s = math.floor(expires_at - clock.wall())
            if remaining_s < 1:
                print(f"error: id={command_id} expired before it could be sent", file=err)
                return EXIT_TIMEOUT
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = remaining_s
            if wait:
                properties.ResponseTopic = response_topic
                properties.CorrelationData = command_id.encode("utf-8")
            sent_mono = clock.monotonic()
            await client.publish(
                f"{root}/commands", encode_command(command), qos=1, properties=properties
            )
            print(f"sent id={command_id} topic={root}/commands ttl_s={ttl_s:g}", file=out)
            if not wait:
                return EXIT_OK
            try:
                async with asyncio.timeout(timeout_s):
                    result = await _await_result(client, command_id)
            except TimeoutError:
                print(f"error: no result for id={command_id} within {timeout_s:g} s", file=err)
                return EXIT_TIMEOUT
            round_trip_ms = (clock.monotonic() - sent_mono) * 1000
    except aiomqtt.MqttError as exc:
        print(f"error: MQTT: {exc}", file=err)
        return EXIT_MQTT

    print(f"result: {json.dumps(result, ensure_ascii=False)}", file=out)
    print(f"round-trip: {round_trip_ms:.1f} ms", file=out)
    return EXIT_OK if result.get("status") == "done" else EXIT_NOT_DONE


async def _await_result(client: aiomqtt.Client, command_id: str) -> dict[str, Any]:
    async for message in client.messages:
        if not isinstance(message.payload, bytes | bytearray):
            continue
        try:
            result = json.loads(message.payload)
        except ValueError:
            continue
        if isinstance(result, dict) and result.get("id") == command_id:
            return result
    raise aiomqtt.MqttError("disconnected while waiting for the result")


def _load_inputs(
    broker: str,
    key_file: Path | str,
    ca_file: Path | str | None,
    password_file: Path | str | None,
) -> tuple[BrokerUrl, Ed25519PrivateKey, str | None, ssl.SSLContext | None]:
    """Read the files ``send_command`` needs (before any connection is made)."""
    address = parse_broker_url(broker)
    private_key = load_private_key(key_file)
    password = None
    if password_file is not None:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    tls_context = None
    if address.tls:
        # System CAs, or the given CA file; hostname checking stays on.
        tls_context = make_tls_context(None if ca_file is None else Path(ca_file))
    return address, private_key, password, tls_context


def _check_name(what: str, value: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{what} must match {NAME_PATTERN}")
