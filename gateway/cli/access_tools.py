"""Access-list tools: ``access-push`` (the platform's side) and ``access-show`` (the gate's).

``access-push`` reads a list file, builds the messages of CONTRACT.md 1.1
("Access lists"), checks them with the gateway's own parser, signs them,
publishes them on ``{root}/access`` and waits for the gateway's
``{root}/access/state`` to answer that version. List files:

- CSV with the header ``card,holder,doors,from,until,profile``; doors are
  separated by ``;``; an empty field is ``null``. A CSV delta only upserts.
- JSON: ``{"cards": [...], "profiles": {...}}`` for a snapshot,
  ``{"upsert": [...], "delete": [...], "profiles": {...},
  "delete_profiles": [...]}`` for a delta (only ``upsert`` is required), the
  entries in the contract's form.

Exit codes of ``access-push``: 0 the gateway holds the version, 1 it refused
or ignored it (the state says why), 2 bad arguments, file or key, 3 no answer
within the timeout, 4 MQTT error.

``access-show`` reads the list the gateway holds (``access.sqlite3``, or the
card file) and prints its version, digest and counts; with ``--card`` it
prints what each door of the config would decide for that card now, and why.

Longer than 400 lines because both tools and their file formats live
together, as ``operator_tools`` does for commands. Their arguments are
``access_commands``, which the daemon's parser loads without this module.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from drivers.access_rules import CardEntry, DoorAccess, WallTime, normalise_card
from drivers.base import SystemClock
from gateway.access.build import delta_message, snapshot_messages
from gateway.access.message import AccessRefused, parse_message
from gateway.access.sources import file_door_access
from gateway.access.store import DB_FILENAME, AccessStore
from gateway.cli.access_commands import DEFAULT_TIMEOUT_S
from gateway.cli.operator_tools import _load_inputs
from gateway.cli.publisher import EXIT_MQTT, EXIT_NOT_DONE, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE
from gateway.config import ConfigError, load_config
from gateway.runtime.clock import make_clock_sync
from gateway.timefmt import rfc3339
from gateway.uplink.broker import topic_root

PART_WINDOW = 8
"""Snapshot parts published ahead of what the gateway's state says it has received."""
CSV_COLUMNS = ("card", "holder", "doors", "from", "until", "profile")


@dataclass(frozen=True, slots=True)
class ListFile:
    """What a list file holds (module docstring)."""

    cards: list[dict[str, Any]]
    profiles: dict[str, Any] | None = None
    delete: list[str] = field(default_factory=list)
    delete_profiles: list[str] | None = None


def read_list_file(path: Path, *, delta: bool) -> ListFile:
    """Read a CSV or JSON list file.

    Raises:
        ValueError: not the format of the module docstring.
        OSError: unreadable.
    """
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a JSON list file is an object")
        known = (
            {"upsert", "delete", "profiles", "delete_profiles"} if delta else {"cards", "profiles"}
        )
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys in the list file: {sorted(unknown)}")
        profiles = data.get("profiles")
        if delta:
            return ListFile(
                list(data.get("upsert", [])),
                profiles,
                list(data.get("delete", [])),
                data.get("delete_profiles"),
            )
        return ListFile(list(data.get("cards", [])), profiles if profiles is not None else {})
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ValueError(f"the CSV header must be {','.join(CSV_COLUMNS)}")
    cards = []
    for row in reader:
        entry: dict[str, Any] = {key: (row[key] or None) for key in CSV_COLUMNS}
        doors = entry["doors"]
        entry["doors"] = doors.split(";") if doors is not None else None
        cards.append(entry)
    return ListFile(cards, None if delta else {})


def build_messages(
    listed: ListFile,
    *,
    gateway: str,
    version: int,
    base: int | None,
    key: Any,
    key_id: str,
    issued_at: float,
) -> list[dict[str, Any]]:
    """The signed messages for a list file, each checked with the gateway's parser.

    Raises:
        AccessRefused: a message the gateway would refuse as ``bad_schema`` or ``too_large``.
    """
    if base is None:
        messages = snapshot_messages(
            listed.cards,
            listed.profiles or {},
            gateway=gateway,
            version=version,
            key=key,
            key_id=key_id,
            issued_at=issued_at,
        )
    else:
        messages = [
            delta_message(
                gateway=gateway,
                base=base,
                version=version,
                upsert=listed.cards,
                delete=listed.delete,
                key=key,
                key_id=key_id,
                issued_at=issued_at,
                profiles=listed.profiles,
                delete_profiles=listed.delete_profiles,
            )
        ]
    for message in messages:
        parse_message(message)
    return messages


async def access_push(
    *,
    broker: str,
    key_file: Path,
    key_id: str,
    site: str,
    gateway: str,
    list_file: Path,
    version: int,
    base: int | None,
    topic_root_template: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ca_file: Path | None = None,
    username: str | None = None,
    password_file: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Sign and publish a list; wait for the gateway's state. Return an exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        address, key, password, tls_context = _load_inputs(broker, key_file, ca_file, password_file)
        listed = read_list_file(list_file, delta=base is not None)
        messages = build_messages(
            listed,
            gateway=gateway,
            version=version,
            base=base,
            key=key,
            key_id=key_id,
            issued_at=time.time(),
        )
    except AccessRefused as exc:
        print(f"access-push: the gateway would refuse this: {exc}", file=err)
        return EXIT_USAGE
    except (OSError, ValueError, TypeError) as exc:
        print(f"access-push: {exc}", file=err)
        return EXIT_USAGE
    root = topic_root(site, gateway, topic_root_template)
    try:
        async with aiomqtt.Client(
            address.host,
            address.port,
            username=username,
            password=password,
            tls_context=tls_context,
        ) as client:
            async with asyncio.timeout(timeout_s):
                return await push_and_wait(client, root, encode_all(messages), version, out)
    except TimeoutError:
        print(f"access-push: no state for version {version} within {timeout_s:g} s", file=err)
        return EXIT_TIMEOUT
    except aiomqtt.MqttError as exc:
        print(f"access-push: MQTT error: {exc}", file=err)
        return EXIT_MQTT


def encode_all(messages: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Messages as published: compact JSON, UTF-8."""
    return [
        json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode("utf-8") for m in messages
    ]


async def push_and_wait(
    client: aiomqtt.Client,
    root: str,
    bodies: Sequence[bytes],
    version: int,
    out: TextIO,
    *,
    window: int | None = PART_WINDOW,
) -> int:
    """Publish ``bodies`` (encoded messages) and wait for the state on ``version``; an exit code.

    At most ``window`` parts are ahead of what the state says the gateway has
    received (all at once with ``None``): the gateway's MQTT client buffers
    whatever arrives, so pacing keeps its memory flat during a big snapshot.
    """
    await client.subscribe(f"{root}/access/state", qos=1)
    sent = 0

    async def send_until(limit: int) -> None:
        nonlocal sent
        while sent < min(limit, len(bodies)):
            await client.publish(f"{root}/access", bodies[sent], qos=1)
            sent += 1

    await send_until(len(bodies) if window is None else window)
    async for message in client.messages:
        if message.retain or not isinstance(message.payload, bytes | bytearray):
            continue  # the retained state is from before this push
        state = json.loads(message.payload)
        error = state.get("last_error")
        if state.get("version") == version:
            print(
                f"applied: version {version}, {state['cards']} cards, digest {state['digest']}",
                file=out,
            )
            return EXIT_OK
        if error is not None and error.get("version") == version:
            print(f"refused: {error['reason']} (the gateway holds {state['version']})", file=out)
            return EXIT_NOT_DONE
        if state.get("version", 0) > version:
            print(f"ignored: the gateway holds version {state['version']}", file=out)
            return EXIT_NOT_DONE
        pending = state.get("pending")
        if window is not None and pending is not None and pending.get("version") == version:
            await send_until(int(pending["received"]) + window)
    raise aiomqtt.MqttError("connection closed")


# --- access-show ------------------------------------------------------------------


def access_show(config_path: Path, card: str | None, *, out: TextIO | None = None) -> int:
    """Print the list the gateway holds; with ``card``, each door's decision now."""
    out = out or sys.stdout
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    config = loaded.config
    sync = make_clock_sync(config.clock.source)
    # The tool has no trusted-time anchor of its own: the wall clock, synced as the kernel says.
    time_now = WallTime(SystemClock(), sync)
    store: AccessStore | None = None
    if config.access.source == "platform":
        path = loaded.data_dir / DB_FILENAME
        if not path.exists():
            print(f"source   platform\nno list yet: {path} does not exist", file=out)
            return EXIT_OK
        store = AccessStore(path)
        state = store.state()
        tz = config.gateway.tz
        assert tz is not None
        access = DoorAccess(store, time_now, tz)
        lines = [
            "source   platform",
            f"version  {state.version}",
            f"cards    {state.cards}",
            f"digest   {state.digest}",
            f"profiles {', '.join(sorted(store.profiles())) or '-'}",
            "pending  "
            + (
                f"version {state.pending.version}: {state.pending.received}/{state.pending.parts}"
                " parts"
                if state.pending
                else "-"
            ),
            f"ignored  {state.ignored}",
            "error    "
            + (
                f"{state.last_error.reason} (version {state.last_error.version})"
                if state.last_error
                else "-"
            ),
        ]
    else:
        access = file_door_access(loaded, time_now)
        access.refresh()
        cards = sum(1 for _ in access.access.entries())
        lines = ["source   file", f"cards    {cards} line(s)"]
    print("\n".join(lines), file=out)
    if card is not None:
        _show_card(access, card, _door_ids(config.devices), sync.is_synced(), out)
    if store is not None:
        store.close()
    return EXIT_OK


def _door_ids(devices: Sequence[Any]) -> list[str]:
    return sorted(getattr(d, "door_name", d.id) for d in devices if d.kind == "door_node")


def _show_card(
    access: DoorAccess, raw: str, doors: Sequence[str], synced: bool, out: TextIO
) -> None:
    card = normalise_card(raw)
    if card is None:
        print(f"card     {raw!r} is not a card id (hex, whole bytes)", file=out)
        return
    entries = access.access.lookup_all(card)
    print(f"card     {card}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", file=out)
    for entry in entries:
        print(f"  {_entry_text(entry)}", file=out)
    print(f"clock    {'synced' if synced else 'unsynced'}", file=out)
    for door in doors or ["(no door configured)"]:
        decision = access.decide(card, door, door_refuses_cards=False)
        verdict = "granted" if decision.granted else "denied"
        print(f"door {door}: {verdict} ({decision.reason.value})", file=out)


def _entry_text(entry: CardEntry) -> str:
    fields: Mapping[str, str | None] = {
        "holder": entry.holder,
        "doors": ",".join(entry.doors) if entry.doors is not None else "all",
        "from": rfc3339(entry.valid_from) if entry.valid_from is not None else None,
        "until": rfc3339(entry.until) if entry.until is not None else None,
        "profile": entry.profile,
    }
    return " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
