"""Access-list messages for one gate (CONTRACT.md 1.1, "Access lists"), built and signed.

Pure: entries in, signed message objects out. The card entry is exactly the
contract's six keys; ``digest`` is the contract's (SHA-256 of the canonical
JSON of ``{"cards": [...sorted by card], "profiles": {...}}``), computed with
the same canonical form as signatures (gateway/commands/model.py), so the
platform can compare a gate's reported digest with what it sent.
Signing is ``gateway.commands.model.sign``: the same canonical form
without ``sig``, Ed25519, base64.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.wire import contract_ts
from gateway.access.build import snapshot_messages
from gateway.cli.operator_tools import encode_command
from gateway.commands.model import canonical_bytes, sign
from gateway.timefmt import rfc3339

MAX_ENTRIES = 5000  # cards (and profile changes) in one message
MAX_BYTES = 1 << 20
SNAPSHOT_PART_CARDS = 2000  # well under 1 MiB with long door lists
ENTRY_KEYS = ("card", "holder", "doors", "from", "until", "profile")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HEX = re.compile(r"^[0-9A-F]+$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DOOR = re.compile(r"^[a-z0-9-]{1,64}$")

Entry = dict[str, Any]
Profiles = dict[str, Any]


def normalise_card(text: str) -> str:
    """Upper-case hex, 1 to 10 bytes, no leading ``00`` byte (as readers' ids are normalised).

    Raises:
        ValueError: not hex, odd length, all zero or longer than 10 bytes.
    """
    card = text.strip().upper()
    if not card or len(card) % 2 or not _HEX.fullmatch(card):
        raise ValueError(f"card {text!r}: not an even number of hex digits")
    while card.startswith("00"):
        card = card[2:]
    if not card or len(card) > 20:
        raise ValueError(f"card {text!r}: must be 1 to 10 bytes, not all zero")
    return card


def entry(raw: Mapping[str, Any], profiles: Mapping[str, Any]) -> Entry:
    """The contract's card entry from an imported record (extra key ``gateways`` allowed).

    Raises:
        ValueError: any field outside the contract.
    """
    unknown = set(raw) - {*ENTRY_KEYS, "gateways"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    holder = raw.get("holder")
    if holder is not None and not (isinstance(holder, str) and 1 <= len(holder) <= 64):
        raise ValueError("holder must be 1 to 64 characters or null")
    doors = raw.get("doors")
    if doors is not None:
        if (
            not isinstance(doors, list)
            or not doors
            or not all(isinstance(d, str) and _DOOR.fullmatch(d) for d in doors)
        ):
            raise ValueError("doors must be a non-empty list of door ids or null")
        doors = sorted(set(doors))
    for key in ("from", "until"):
        if raw.get(key) is not None and contract_ts(raw[key]) is None:
            raise ValueError(f"{key} must be a UTC timestamp with milliseconds and Z, or null")
    profile = raw.get("profile")
    if profile is not None and profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}")
    return {
        "card": normalise_card(str(raw.get("card", ""))),
        "holder": holder,
        "doors": doors,
        "from": raw.get("from"),
        "until": raw.get("until"),
        "profile": profile,
    }


def check_profile(name: str, body: Any) -> dict[str, Any]:
    """A profile as the contract defines it.

    Raises:
        ValueError: unknown keys, bad days, segments not sorted or overlapping, bad dates.
    """
    if not isinstance(body, dict) or set(body) - {"weekly", "closed_dates"}:
        raise ValueError(f"profile {name}: only weekly and closed_dates")
    weekly = body.get("weekly", {})
    if not isinstance(weekly, dict) or set(weekly) - set(DAYS):
        raise ValueError(f"profile {name}: weekly maps mon..sun to segments")
    for day, segments in weekly.items():
        end_prev = ""
        for seg in segments:
            ok = (
                isinstance(seg, list)
                and len(seg) == 2
                and all(isinstance(t, str) and _HHMM.fullmatch(t) for t in seg)
            )
            if not ok or seg[0] == "24:00" or seg[0] >= seg[1] or seg[0] < end_prev:
                raise ValueError(f"profile {name}: {day} segments must be sorted [start, end)")
            end_prev = seg[1]
    dates = body.get("closed_dates", [])
    if (
        not isinstance(dates, list)
        or not all(isinstance(d, str) and _DATE.fullmatch(d) for d in dates)
        or dates != sorted(set(dates))
    ):
        raise ValueError(f"profile {name}: closed_dates must be sorted unique YYYY-MM-DD")
    return body


def digest(cards: Iterable[Entry], profiles: Mapping[str, Any]) -> str:
    ordered = sorted(cards, key=lambda e: str(e["card"]))
    return hashlib.sha256(
        canonical_bytes({"cards": ordered, "profiles": dict(profiles)})
    ).hexdigest()


def _now() -> str:
    return rfc3339(time.time())


def delta(
    gateway: str,
    *,
    base: int,
    version: int,
    upsert: Sequence[Entry],
    delete: Sequence[str],
    profiles: Mapping[str, Any],
    delete_profiles: Sequence[str],
    key_id: str,
) -> dict[str, Any]:
    """An unsigned ``access.delta``; raise ValueError when it exceeds a message's limits."""
    if len(upsert) + len(delete) + len(profiles) + len(delete_profiles) > MAX_ENTRIES:
        raise ValueError("delta too large")
    return {
        "v": 1,
        "type": "access.delta",
        "gateway": gateway,
        "base": base,
        "version": version,
        "issued_at": _now(),
        "upsert": sorted(upsert, key=lambda e: str(e["card"])),
        "delete": sorted(delete),
        "profiles": dict(profiles),
        "delete_profiles": sorted(delete_profiles),
        "key_id": key_id,
    }


def snapshot(
    gateway: str,
    *,
    version: int,
    cards: Sequence[Entry],
    profiles: Mapping[str, Any],
    key_id: str,
) -> list[dict[str, Any]]:
    """The unsigned parts of an ``access.snapshot`` (one empty part for an empty list)."""
    return snapshot_messages(
        sorted(cards, key=lambda e: str(e["card"])),
        profiles,
        gateway=gateway,
        version=version,
        key=None,
        key_id=key_id,
        issued_at=time.time(),
        part_size=SNAPSHOT_PART_CARDS,
    )


def signed_payload(message: Mapping[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """Signed and encoded; raise ValueError past the contract's 1 MiB."""
    payload = encode_command(sign(message, private_key))
    if len(payload) > MAX_BYTES:
        raise ValueError("access message over 1 MiB")
    return payload
