"""Building and signing access messages: the platform's side, for tools and tests.

Nothing here runs in the daemon (the gateway holds no private key). A
snapshot is split into parts of at most ``MAX_ENTRIES`` cards, profiles in
part 1; every message is signed exactly as the gateway verifies it: Ed25519
over ``canonical_bytes`` of the message without ``sig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.access.message import MAX_ENTRIES
from gateway.commands.model import sign
from gateway.timefmt import rfc3339

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def snapshot_messages(
    cards: Sequence[Mapping[str, Any]],
    profiles: Mapping[str, Any],
    *,
    gateway: str,
    version: int,
    key: Ed25519PrivateKey | None,
    key_id: str,
    issued_at: float,
    part_size: int = MAX_ENTRIES,
) -> list[dict[str, Any]]:
    """A whole list as snapshot parts (one empty part for an empty list), cards in order given.

    Signed with ``key``; ``key=None`` leaves them unsigned, for the platform
    (central/access.py), which signs each part as it sends it.
    """
    chunks = [cards[i : i + part_size] for i in range(0, len(cards), part_size)] or [[]]
    messages = []
    for index, chunk in enumerate(chunks, start=1):
        message: dict[str, Any] = {
            "v": 1,
            "type": "access.snapshot",
            "gateway": gateway,
            "version": version,
            "part": index,
            "parts": len(chunks),
            "issued_at": rfc3339(issued_at),
            "cards": list(chunk),
            "key_id": key_id,
        }
        if index == 1:
            message["profiles"] = dict(profiles)
        messages.append(message if key is None else sign(message, key))
    return messages


def delta_message(
    *,
    gateway: str,
    base: int,
    version: int,
    upsert: Sequence[Mapping[str, Any]],
    delete: Sequence[str],
    key: Ed25519PrivateKey,
    key_id: str,
    issued_at: float,
    profiles: Mapping[str, Any] | None = None,
    delete_profiles: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One signed delta."""
    message: dict[str, Any] = {
        "v": 1,
        "type": "access.delta",
        "gateway": gateway,
        "base": base,
        "version": version,
        "issued_at": rfc3339(issued_at),
        "upsert": list(upsert),
        "delete": list(delete),
        "key_id": key_id,
    }
    if profiles is not None:
        message["profiles"] = dict(profiles)
    if delete_profiles is not None:
        message["delete_profiles"] = list(delete_profiles)
    return sign(message, key)


def card(
    card_id: str,
    *,
    holder: str | None = None,
    doors: Sequence[str] | None = None,
    valid_from: str | None = None,
    until: str | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """A card entry in the contract's form (exactly the six keys)."""
    return {
        "card": card_id,
        "holder": holder,
        "doors": sorted(doors) if doors is not None else None,
        "from": valid_from,
        "until": until,
        "profile": profile,
    }
