"""Access-list messages: shape, limits and the card/profile forms (CONTRACT.md 1.1).

``parse_message`` turns a decoded JSON object into an ``AccessDelta`` or an
``AccessSnapshotPart`` or raises ``AccessRefused`` with ``too_large`` or
``bad_schema``. It checks everything that needs no state: exact keys, card
ids, timestamps in the contract's form, sorted unique doors and dates,
sorted non-overlapping segments, a card at most once per message, counts.
What needs the list held (a delta's profile names against the profiles held
after it, a snapshot's names once complete) is the store's to check.

Entries keep their canonical JSON (``WireEntry.text``): the digest is
computed over the entries as held, exactly as the platform sent them.

Longer than 400 lines because the contract's shapes (envelope, delta,
snapshot part, card entry, profile) and the signed form built from them are
checked in one place, against one list of keys each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any, TypeGuard

from drivers.access_rules import WEEKDAYS, CardEntry, Profile, parse_hhmm
from gateway.access.digest import canonical_text
from gateway.commands.model import decode_signature, parse_rfc3339_utc

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_ENTRIES = 5000
MAX_PARTS = 1000

_CARD = re.compile(r"^(?!00)(?:[0-9A-F]{2}){1,10}$")
_DOOR = re.compile(r"^[a-z0-9-]{1,64}$")
_ID = re.compile(r"^[a-z0-9-]{1,64}$")
_CONTRACT_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ENTRY_KEYS = frozenset({"card", "holder", "doors", "from", "until", "profile"})
_PROFILE_KEYS = frozenset({"weekly", "closed_dates"})
_COMMON_KEYS = frozenset({"v", "type", "gateway", "version", "issued_at", "key_id", "sig"})
_DELTA_KEYS = _COMMON_KEYS | {"base", "upsert", "delete"}
_DELTA_OPTIONAL = frozenset({"profiles", "delete_profiles"})
_SNAPSHOT_KEYS = _COMMON_KEYS | {"part", "parts", "cards"}


class AccessErrorReason(StrEnum):
    """``last_error.reason`` of the access state (CONTRACT.md, "Order of checks")."""

    TOO_LARGE = "too_large"
    BAD_JSON = "bad_json"
    BAD_SCHEMA = "bad_schema"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    NOT_PERMITTED = "not_permitted"
    WRONG_GATEWAY = "wrong_gateway"
    BASE_MISMATCH = "base_mismatch"


class AccessRefused(Exception):
    """A message refused, with the contract reason and the version when it could be read."""

    def __init__(self, reason: AccessErrorReason, detail: str, *, version: int | None = None):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.version = version


@dataclass(frozen=True, slots=True)
class WireEntry:
    """A checked card entry: its id, profile and canonical JSON as sent (held, digested)."""

    card: str
    profile: str | None
    text: str

    @property
    def entry(self) -> CardEntry:
        return entry_from_text(self.text)


@dataclass(frozen=True, slots=True)
class WireProfile:
    profile: Profile
    wire: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every access message carries besides its list content."""

    gateway: str
    version: int
    issued_at: float
    key_id: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class AccessDelta:
    envelope: Envelope
    base: int
    upsert: tuple[WireEntry, ...]
    delete: tuple[str, ...]
    profiles: Mapping[str, WireProfile]
    delete_profiles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessSnapshotPart:
    envelope: Envelope
    part: int
    parts: int
    profiles: Mapping[str, WireProfile] | None
    """Part 1 only."""
    cards: tuple[WireEntry, ...]


AccessMessage = AccessDelta | AccessSnapshotPart


def _bad(detail: str, version: int | None = None) -> AccessRefused:
    return AccessRefused(AccessErrorReason.BAD_SCHEMA, detail, version=version)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def salvage_version(obj: Mapping[str, Any]) -> int | None:
    """The message's ``version`` when it is a plain non-negative integer, for ``last_error``."""
    version = obj.get("version")
    return version if _is_int(version) and version >= 0 else None


def check_size(obj: Mapping[str, Any]) -> None:
    """The counting limits, checked before the shape (they are ``too_large``).

    Raises:
        AccessRefused: ``too_large``.
    """
    version = salvage_version(obj)
    counted = 0
    for key in ("upsert", "delete", "delete_profiles", "cards"):
        value = obj.get(key)
        if isinstance(value, list):
            counted += len(value)
    if obj.get("type") == "access.delta" and isinstance(obj.get("profiles"), dict):
        counted += len(obj["profiles"])
    if counted > MAX_ENTRIES:
        raise AccessRefused(
            AccessErrorReason.TOO_LARGE, f"{counted} entries > {MAX_ENTRIES}", version=version
        )
    parts = obj.get("parts")
    if _is_int(parts) and parts > MAX_PARTS:
        raise AccessRefused(
            AccessErrorReason.TOO_LARGE, f"{parts} parts > {MAX_PARTS}", version=version
        )


def _timestamp(value: object, where: str, version: int) -> float:
    if not isinstance(value, str) or not _CONTRACT_TS.fullmatch(value):
        raise _bad(f"{where}: not YYYY-MM-DDTHH:MM:SS.mmmZ", version)
    try:
        return parse_rfc3339_utc(value).timestamp()
    except ValueError as exc:
        raise _bad(f"{where}: not a real time", version) from exc


def _optional_timestamp(value: object, where: str, version: int) -> float | None:
    return None if value is None else _timestamp(value, where, version)


def parse_card_id(value: object, where: str, version: int) -> str:
    if not isinstance(value, str) or not _CARD.fullmatch(value):
        raise _bad(f"{where}: not upper-case hex of 1..10 bytes, no leading 00", version)
    return value


def _check_time(value: object, where: str, key: str, version: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _CONTRACT_TS.fullmatch(value):
        raise _bad(f"{where}.{key}: not YYYY-MM-DDTHH:MM:SS.mmmZ", version)
    try:
        datetime.fromisoformat(value[:-1])  # the C parser: a real date and time
    except ValueError as exc:
        raise _bad(f"{where}.{key}: not a real time", version) from exc


def parse_entry(value: object, where: str, version: int) -> WireEntry:
    """One card entry: exactly the six keys (CONTRACT.md "Card entry").

    Called for every entry of a message (5,000 per part), so it builds the
    canonical text directly: the keys are known and every value but
    ``holder`` and ``profile`` is already checked to need no escaping.
    """
    if not isinstance(value, dict) or value.keys() != _ENTRY_KEYS:
        raise _bad(f"{where}: a card entry has exactly the keys {sorted(_ENTRY_KEYS)}", version)
    card = value["card"]
    if not isinstance(card, str) or not _CARD.fullmatch(card):
        parse_card_id(card, f"{where}.card", version)  # raises with the reason
    holder = value["holder"]
    if holder is not None and not (isinstance(holder, str) and 1 <= len(holder) <= 64):
        raise _bad(f"{where}.holder: a string of 1 to 64 characters or null", version)
    doors = value["doors"]
    if doors is not None:
        if not isinstance(doors, list) or not all(
            isinstance(d, str) and _DOOR.fullmatch(d) for d in doors
        ):
            raise _bad(f"{where}.doors: a list of door ids or null", version)
        if doors != sorted(set(doors)):
            raise _bad(f"{where}.doors: not sorted and unique", version)
    valid_from, until = value["from"], value["until"]
    _check_time(valid_from, where, "from", version)
    _check_time(until, where, "until", version)
    profile = value["profile"]
    if profile is not None and not (isinstance(profile, str) and 1 <= len(profile) <= 64):
        raise _bad(f"{where}.profile: a profile name or null", version)
    try:
        text = (
            f'{{"card":"{card}","doors":{_doors_text(doors)},"from":{_plain(valid_from)},'
            f'"holder":{_string(holder)},"profile":{_string(profile)},"until":{_plain(until)}}}'
        )
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form
        raise _bad(f"{where}: a string with no UTF-8 form", version) from exc
    return WireEntry(card, profile, text)


def _string(value: str | None) -> str:
    if value is None:
        return "null"
    value.encode("utf-8")  # raises for a lone surrogate, as the canonical form would
    return encode_basestring(value)


def _plain(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _doors_text(doors: list[str] | None) -> str:
    return "null" if doors is None else "[" + ",".join(f'"{d}"' for d in doors) + "]"


def entry_from_text(text: str) -> CardEntry:
    """A held entry (canonical JSON, checked when it arrived) as a ``CardEntry``."""
    value = json.loads(text)
    valid_from, until, doors = value["from"], value["until"], value["doors"]
    return CardEntry(
        card=value["card"],
        holder=value["holder"],
        doors=tuple(doors) if doors is not None else None,
        valid_from=parse_rfc3339_utc(valid_from).timestamp() if valid_from is not None else None,
        until=parse_rfc3339_utc(until).timestamp() if until is not None else None,
        profile=value["profile"],
    )


def parse_profile(value: object, where: str, version: int) -> WireProfile:
    """One profile: ``weekly`` segments and ``closed_dates`` (CONTRACT.md "Profile")."""
    if not isinstance(value, dict) or value.keys() != _PROFILE_KEYS:
        raise _bad(f"{where}: a profile has exactly the keys weekly and closed_dates", version)
    weekly = value["weekly"]
    if not isinstance(weekly, dict) or not set(weekly) <= set(WEEKDAYS):
        raise _bad(f"{where}.weekly: maps mon..sun to segments", version)
    days: list[tuple[tuple[int, int], ...]] = []
    for day in WEEKDAYS:
        segments = weekly.get(day, [])
        if not isinstance(segments, list):
            raise _bad(f"{where}.weekly.{day}: a list of segments", version)
        parsed: list[tuple[int, int]] = []
        for segment in segments:
            if (
                not isinstance(segment, list)
                or len(segment) != 2
                or not all(isinstance(t, str) for t in segment)
            ):
                raise _bad(f"{where}.weekly.{day}: a segment is [start, end]", version)
            try:
                start, end = parse_hhmm(segment[0]), parse_hhmm(segment[1])
            except ValueError as exc:
                raise _bad(f"{where}.weekly.{day}: {exc}", version) from exc
            if start >= end or (parsed and start < parsed[-1][1]):
                raise _bad(f"{where}.weekly.{day}: segments sorted, not empty, no overlap", version)
            parsed.append((start, end))
        days.append(tuple(parsed))
    closed = value["closed_dates"]
    if not isinstance(closed, list) or not all(
        isinstance(d, str) and _DATE.fullmatch(d) for d in closed
    ):
        raise _bad(f"{where}.closed_dates: a list of YYYY-MM-DD", version)
    try:
        for day_text in closed:
            date.fromisoformat(day_text)
    except ValueError as exc:
        raise _bad(f"{where}.closed_dates: not a real date", version) from exc
    if closed != sorted(set(closed)):
        raise _bad(f"{where}.closed_dates: not sorted and unique", version)
    return WireProfile(Profile(tuple(days), frozenset(closed)), value)


def _profiles(value: object, where: str, version: int) -> dict[str, WireProfile]:
    if not isinstance(value, dict):
        raise _bad(f"{where}: an object of profiles by name", version)
    out: dict[str, WireProfile] = {}
    for name, body in value.items():
        if not 1 <= len(name) <= 64:
            raise _bad(f"{where}: a profile name has 1 to 64 characters", version)
        out[name] = parse_profile(body, f"{where}.{name}", version)
    return out


def _entries(value: object, where: str, version: int) -> tuple[WireEntry, ...]:
    if not isinstance(value, list):
        raise _bad(f"{where}: a list of card entries", version)
    entries = tuple(parse_entry(item, f"{where}[{i}]", version) for i, item in enumerate(value))
    if len({e.card for e in entries}) != len(entries):
        raise _bad(f"{where}: a card appears twice", version)
    return entries


def _envelope(obj: Mapping[str, Any], version: int) -> Envelope:
    gateway = obj["gateway"]
    if not isinstance(gateway, str) or not _ID.fullmatch(gateway):
        raise _bad("gateway: [a-z0-9-]{1,64}", version)
    key_id = obj["key_id"]
    if not isinstance(key_id, str) or not 1 <= len(key_id) <= 64:
        raise _bad("key_id: a string of 1 to 64 characters", version)
    sig = obj["sig"]
    try:
        signature = decode_signature(sig) if isinstance(sig, str) else b""
    except ValueError as exc:
        raise _bad(f"sig: {exc}", version) from exc
    if not signature:
        raise _bad("sig: base64 of an Ed25519 signature", version)
    issued_at = _timestamp(obj["issued_at"], "issued_at", version)
    return Envelope(gateway, version, issued_at, key_id, signature)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def check_utf8(payload: bytes, obj: Mapping[str, Any]) -> None:
    """Refuse a ``\\uD800``-style escape that leaves a string with no UTF-8 form.

    Only such an escape can make one, so the whole object is re-encoded only
    when the payload holds one (a pair that forms a character is fine).

    Raises:
        AccessRefused: ``bad_json``.
    """
    if not _SURROGATE_ESCAPE.search(payload):
        return
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AccessRefused(AccessErrorReason.BAD_JSON, "not representable as UTF-8") from exc


def signed_bytes(obj: Mapping[str, Any], message: AccessMessage) -> bytes:
    """What the signature covers: ``canonical_bytes`` of ``obj``, built from the parts.

    Equal to ``canonical_bytes(obj)`` (tests check it), without re-encoding
    5,000 entries in one call: that call holds the GIL for tens of
    milliseconds, which the doors' event loop would wait out. The entries'
    canonical texts were made while checking them; a top-level object's
    canonical form is its sorted ``"key":value`` pairs.
    """
    big = "cards" if isinstance(message, AccessSnapshotPart) else "upsert"
    entries = message.cards if isinstance(message, AccessSnapshotPart) else message.upsert
    pairs = []
    for key in sorted(k for k in obj if k != "sig"):
        if key == big:
            value = "[" + ",".join(entry.text for entry in entries) + "]"
        else:
            value = canonical_text(obj[key])
        pairs.append(f"{encode_basestring(key)}:{value}")
    return ("{" + ",".join(pairs) + "}").encode("utf-8")


def parse_message(obj: Mapping[str, Any]) -> AccessMessage:
    """A decoded JSON object as an access message (module docstring).

    Raises:
        AccessRefused: ``too_large`` or ``bad_schema``.
    """
    check_size(obj)
    version = salvage_version(obj)
    kind = obj.get("type")
    if obj.get("v") != 1 or isinstance(obj.get("v"), bool):
        raise _bad('"v" must be 1', version)
    if kind == "access.delta":
        required, optional = _DELTA_KEYS, _DELTA_OPTIONAL
    elif kind == "access.snapshot":
        required, optional = _SNAPSHOT_KEYS, frozenset({"profiles"})
    else:
        raise _bad("type: access.delta or access.snapshot", version)
    keys = set(obj)
    if not required <= keys or not keys <= required | optional:
        unknown = sorted(keys - required - optional)
        raise _bad(f"keys: missing {sorted(required - keys)}, unknown {unknown}", version)
    if version is None or version < 1:
        raise _bad("version: an integer >= 1", version)
    envelope = _envelope(obj, version)
    if kind == "access.delta":
        return _delta(obj, envelope)
    return _snapshot(obj, envelope)


def _delta(obj: Mapping[str, Any], envelope: Envelope) -> AccessDelta:
    version = envelope.version
    base = obj["base"]
    if not _is_int(base) or base < 0 or version <= base:
        raise _bad("base: an integer >= 0 below version", version)
    upsert = _entries(obj["upsert"], "upsert", version)
    deletes = obj["delete"]
    if not isinstance(deletes, list):
        raise _bad("delete: a list of card ids", version)
    delete = tuple(parse_card_id(c, f"delete[{i}]", version) for i, c in enumerate(deletes))
    if len(set(delete)) != len(delete):
        raise _bad("delete: a card appears twice", version)
    if {e.card for e in upsert} & set(delete):
        raise _bad("a card is both upserted and deleted", version)
    profiles = _profiles(obj.get("profiles", {}), "profiles", version)
    raw_deleted = obj.get("delete_profiles", [])
    if not isinstance(raw_deleted, list) or not all(
        isinstance(n, str) and 1 <= len(n) <= 64 for n in raw_deleted
    ):
        raise _bad("delete_profiles: a list of profile names", version)
    if len(set(raw_deleted)) != len(raw_deleted) or set(raw_deleted) & profiles.keys():
        raise _bad("delete_profiles: a name twice, or also in profiles", version)
    return AccessDelta(envelope, base, upsert, delete, profiles, tuple(raw_deleted))


def _snapshot(obj: Mapping[str, Any], envelope: Envelope) -> AccessSnapshotPart:
    version = envelope.version
    part, parts = obj["part"], obj["parts"]
    if not (_is_int(part) and _is_int(parts) and 1 <= part <= parts):
        raise _bad("part and parts: integers with 1 <= part <= parts", version)
    if (part == 1) != ("profiles" in obj):
        raise _bad("profiles: required in part 1, absent from the others", version)
    profiles = _profiles(obj["profiles"], "profiles", version) if part == 1 else None
    cards = _entries(obj["cards"], "cards", version)
    if not cards and parts != 1:
        raise _bad("cards: 1 to 5000 per part (an empty list is one part)", version)
    return AccessSnapshotPart(envelope, part, parts, profiles, cards)
