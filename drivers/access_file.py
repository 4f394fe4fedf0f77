"""The local card file as an ``AccessList`` (``access.source: file``).

The file's format and parser stay in ``drivers.access``; this adapter only
presents its entries through the interface of ``drivers.access_rules``, so a
door decides with a file exactly as it does with the platform's list. A file
has no version (``None``, CONTRACT.md "Decisions") and no profiles; a card
on several lines has several entries, and ``decide`` grants it when any does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import tzinfo
from pathlib import Path

from drivers.access import AccessList as CardFile
from drivers.access import CardEntry as FileLine
from drivers.access_rules import CardEntry, Profile

_NO_PROFILES: Mapping[str, Profile] = {}


def _entry(line: FileLine) -> CardEntry:
    doors = tuple(sorted(line.doors)) if line.doors is not None else None
    return CardEntry(
        card=line.card,
        holder=None,
        doors=doors,
        valid_from=line.valid_from,
        until=line.valid_until,
        profile=None,
    )


class FileAccessList:
    """An ``AccessList`` read from the local card file, reloaded when it changes."""

    def __init__(self, path: Path, *, tz: tzinfo | None = None) -> None:
        self.file = CardFile(path, tz=tz)

    @property
    def version(self) -> int | None:
        return None

    def refresh(self) -> None:
        self.file.refresh()

    def lookup(self, card_hex: str) -> CardEntry | None:
        entries = self.lookup_all(card_hex)
        return entries[0] if entries else None

    def lookup_all(self, card_hex: str) -> tuple[CardEntry, ...]:
        return tuple(_entry(line) for line in self.file.entries().get(card_hex, ()))

    def entries(self) -> Iterator[CardEntry]:
        lines = self.file.entries()
        for card in sorted(lines):
            for line in lines[card]:
                yield _entry(line)

    def profiles(self) -> Mapping[str, Profile]:
        return _NO_PROFILES
