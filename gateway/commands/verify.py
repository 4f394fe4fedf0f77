"""Verification of inbound commands (CONTRACT.md, "Commands").

``CommandVerifier.verify`` runs the contract's checks in the contract's order
and raises ``CommandRejected`` with the first that fails:

 1. ``bad_json``       payload over ``max_payload_bytes`` (checked before any
                       parsing, so an oversize payload costs nothing); not
                       UTF-8; not JSON (including NaN/Infinity, duplicate keys,
                       nesting past the parser's recursion limit, strings with
                       lone surrogates that have no UTF-8 form).
 2. ``bad_schema``     valid JSON but not an object (``[1,2,3]``), or
                       ``CommandMessage`` rejects it (types, patterns, unknown
                       fields, timestamps, malformed ``sig``, params of a
                       contract action).
 3. ``unknown_key``    ``key_id`` not in ``commands.public_keys``.
 4. ``bad_signature``  Ed25519 over ``canonical_bytes`` does not verify.
 5. ``wrong_gateway``  ``gateway`` is not this gateway's id.
 6. ``not_yet_valid``  now < issued_at - skew.
 7. ``expired``        now > expires_at.
 8. ``ttl_too_long``   expires_at - issued_at > max_ttl.
 9. ``replayed``       the id was seen before (``SeenIds``).
10. ``unknown_device`` no such device (the gateway's own id is a device that
                       supports ``gateway.ping`` only).
11. ``not_permitted``  the action is not granted to this key on this device,
                       or the device does not support it.

Oversize payloads are ``bad_json`` rather than ``bad_schema``: they are
refused before they are parsed, so nothing is known about their structure.

Steps 1 to 4 are ``authenticate``: pure CPU, no I/O, run as each message
arrives so that garbage never reaches the queue of real commands. Steps 5 to
11 are ``authorize``, for a message whose signature verified.

The replay check here is a read; the processor's ``CommandStore.accept``
inserts the id and the "accepted" record in one transaction, which is the
real guard against running a command twice.

The verifier holds no I/O beyond that read and never logs: the processor logs
the outcome, never the signature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from drivers.base import Clock
from gateway.commands.model import (
    Action,
    CommandMessage,
    CommandRejected,
    CommandsConfig,
    RejectReason,
    VerifiedCommand,
    canonical_bytes,
    salvage_device,
    salvage_id,
)
from gateway.runtime.clock import TrustedTime

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_GATEWAY_ACTIONS = frozenset({Action.GATEWAY_PING.value})


class SeenIds(Protocol):
    """Durable memory of command ids (``gateway.commands.store.CommandStore``)."""

    def is_seen(self, command_id: str) -> bool: ...


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on duplicate keys (first wins, last wins); refuse them
    # so the gateway and the signer can never read different commands.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json_object(payload: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Decode a payload into a JSON object, refusing what signers and we could read apart.

    Raises:
        CommandRejected: ``bad_json``, for every way the payload is not a JSON
            object we can read.
    """
    if len(payload) > max_bytes:
        raise CommandRejected(
            RejectReason.BAD_JSON, f"payload of {len(payload)} bytes > {max_bytes}"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandRejected(RejectReason.BAD_JSON, "not UTF-8") from exc
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except RecursionError as exc:
        raise CommandRejected(RejectReason.BAD_JSON, "nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, huge ints
        raise CommandRejected(RejectReason.BAD_JSON, "not JSON") from exc
    if not isinstance(obj, dict):  # JSON, but of the wrong shape: the schema's concern
        raise CommandRejected(RejectReason.BAD_SCHEMA, "not a JSON object")
    return obj


def parse_json_object(payload: bytes, *, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Decode a command payload into a JSON object and its canonical form (``canonical_bytes``).

    Raises:
        CommandRejected: ``bad_json``, for every way the payload is not JSON we
            can read and re-encode; ``bad_schema`` for JSON that is not an object.
    """
    obj = decode_json_object(payload, max_bytes=max_bytes)
    try:
        signed = canonical_bytes(obj)
    except RecursionError as exc:
        raise CommandRejected(RejectReason.BAD_JSON, "nested too deeply") from exc
    except ValueError as exc:  # a "\ud800" escape: a string with no UTF-8 form
        raise CommandRejected(RejectReason.BAD_JSON, "not representable as UTF-8") from exc
    return obj, signed


class CommandVerifier:
    """Checks a raw command payload against the contract and the configuration.

    Args:
        config: the ``commands:`` section (keys, time rules, permissions).
        gateway_id: this gateway's id; also the ``device`` of ``gateway.ping``.
        device_actions: per device id, the actions its driver supports.
        seen: durable memory of used command ids.
        clock: ``wall()`` is "now" for the validity window, unless ``trusted`` is given.
        trusted: trusted time (CONTRACT 1.1): "now" for the window, and told the
            ``issued_at`` (less the skew) of every command whose signature verifies.
    """

    def __init__(
        self,
        config: CommandsConfig,
        *,
        gateway_id: str,
        device_actions: Mapping[str, frozenset[str]],
        seen: SeenIds,
        clock: Clock,
        trusted: TrustedTime | None = None,
    ) -> None:
        self._config = config
        self._trusted = trusted
        self._gateway_id = gateway_id
        self._device_actions = device_actions  # not copied: drivers may be added later
        self._seen = seen
        self._clock = clock
        self._keys = _public_keys(config)

    def verify(self, payload: bytes) -> VerifiedCommand:
        """Run every check in contract order.

        Raises:
            CommandRejected: with the first failing reason and what could be read.
        """
        return self.authorize(self.authenticate(payload))

    def authenticate(self, payload: bytes) -> CommandMessage:
        """Checks 1 to 4: JSON, schema, known key, signature. No I/O.

        Raises:
            CommandRejected: ``bad_json``, ``bad_schema``, ``unknown_key`` or ``bad_signature``.
        """
        obj, signed = parse_json_object(payload, max_bytes=self._config.max_payload_bytes)
        try:
            message = CommandMessage.model_validate(obj)
        except (ValidationError, RecursionError) as exc:
            raise CommandRejected(
                RejectReason.BAD_SCHEMA,
                _schema_detail(exc),
                command_id=salvage_id(obj),
                device=salvage_device(obj),
            ) from exc

        key = self._keys.get(message.key_id)
        if key is None:
            raise _rejection(message, RejectReason.UNKNOWN_KEY, "key_id not configured", False)
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - loaded with a key

        try:
            key.verify(message.signature, signed)
        except InvalidSignature:
            raise _rejection(
                message, RejectReason.BAD_SIGNATURE, "signature does not verify", False
            ) from None
        return message

    def authorize(self, message: CommandMessage) -> VerifiedCommand:
        """Checks 5 to 11, for a message ``authenticate`` returned.

        Raises:
            CommandRejected: from ``wrong_gateway`` to ``not_permitted``; its
                ``expires_at`` is set (the command is authentic).
        """

        def reject(reason: RejectReason, detail: str) -> CommandRejected:
            return _rejection(message, reason, detail, True)

        if message.gateway != self._gateway_id:
            raise reject(RejectReason.WRONG_GATEWAY, f"addressed to {message.gateway}")

        issued_at = message.issued_at.timestamp()
        expires_at = message.expires_at.timestamp()
        if self._trusted is None:
            now = self._clock.wall()
        else:
            # Signed by the platform: a time that has passed (less the skew).
            self._trusted.observe_trusted(issued_at - self._config.skew_s)
            now = self._trusted.now()
        if now < issued_at - self._config.skew_s:
            raise reject(RejectReason.NOT_YET_VALID, f"{issued_at - now:.1f} s early")
        if now > expires_at:
            raise reject(RejectReason.EXPIRED, f"{now - expires_at:.1f} s late")
        if expires_at - issued_at > self._config.max_ttl_s:
            raise reject(RejectReason.TTL_TOO_LONG, f"ttl {expires_at - issued_at:.1f} s")

        if self._seen.is_seen(message.id):
            raise reject(RejectReason.REPLAYED, "id seen before")

        if message.device == self._gateway_id:
            supported: frozenset[str] | None = _GATEWAY_ACTIONS  # the gateway answers pings
        else:
            supported = self._device_actions.get(message.device)
        if supported is None:
            raise reject(RejectReason.UNKNOWN_DEVICE, "no such device")
        grant = self._config.permissions.get(message.device)
        if grant is None or message.action not in grant.actions:
            raise reject(RejectReason.NOT_PERMITTED, "action not granted on this device")
        if message.key_id not in grant.key_ids:
            raise reject(RejectReason.NOT_PERMITTED, "key not granted this device")
        if message.action not in supported:
            raise reject(RejectReason.NOT_PERMITTED, "device does not support this action")

        return VerifiedCommand(
            id=message.id,
            action=message.action,
            device=message.device,
            params=message.device_action(),
            key_id=message.key_id,
            issued_at=issued_at,
            expires_at=expires_at,
        )


def _rejection(
    message: CommandMessage, reason: RejectReason, detail: str, authentic: bool
) -> CommandRejected:
    return CommandRejected(
        reason,
        detail,
        command_id=message.id,
        device=message.device,
        action=message.action,
        key_id=message.key_id,
        expires_at=message.expires_at.timestamp() if authentic else None,
    )


def _public_keys(config: CommandsConfig) -> dict[str, Ed25519PublicKey]:
    """The configured keys; ``cryptography`` (about 7 MB resident) loads only if there are any."""
    raw_keys = config.public_key_bytes()
    if not raw_keys:
        return {}
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    return {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in raw_keys.items()}


def _schema_detail(exc: Exception) -> str:
    """A short, safe description of a schema failure: field paths, no input values."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            ".".join(str(part) for part in error["loc"]) + ": " + error["type"]
            for error in exc.errors(include_input=False, include_url=False)[:5]
        )
    return "nested too deeply"
