"""The local card file: which cards open which doors, and when.

The gateway and the door node together are the access controller
(PROTOCOLS.md, "Door node"): with this file, residents still get in when the
network is down. This module owns the file's format and its reload; cards are
decided by ``drivers.access_rules.decide``, through ``drivers.access_file``.

File format (``access.cards``), UTF-8 text, one card per line::

    # comments start with '#', anywhere on a line; blank lines are ignored
    04A1B2C3                                            # every door, always
    04A1B2C4  doors=door-east-1,door-west-1             # only these doors
    04A1B2C5  from=2026-01-01 until=2026-06-30          # dates inclusive
    04A1B2C6  doors=door-east-1 from=2026-03-01T08:00 until=2026-03-01T18:00

- The card id comes first: hex, an even number of digits, 1 to 20 bytes, case
  ignored. Leading ``00`` bytes are dropped, as the door node reports them
  (``0004A1B2C3`` is ``04A1B2C3``); an all-zero id is not a card.
- Then options, each ``key=value``, in any order, each at most once:
  ``doors=`` a comma-separated list of door names (``[a-z0-9-]{1,64}``; the
  door name defaults to the device id); absent means every door.
  ``from=`` / ``until=`` a date (``YYYY-MM-DD``, the whole day, inclusive) or a
  local date and time (``YYYY-MM-DDTHH:MM[:SS]``, to the second); either may be
  left out. Dates and times without an offset are in the gateway's local time
  zone (or the ``tz`` given to ``AccessList``); an explicit offset is honoured.
- A card may appear on several lines (e.g. different doors in different
  periods): it is granted when any of its lines allows it.
- Lines end with ``\n`` (or ``\r\n``) and nothing else; fields are separated
  by ASCII spaces and tabs and nothing else. Unicode's other line and field
  separators (U+001C..U+001E, U+0085, U+2028...) are ordinary characters: a
  card id containing one is not hex, and in a comment they are comment, so
  ``04A1B2C3 # x\x1cCAFEBABE`` lists 04A1B2C3 only. A UTF-8 byte order mark
  at the start of the file is ignored.
- Each line is decoded on its own: a line that is not UTF-8 (a Latin-1 byte,
  even in its comment) is a bad line. A bad line is logged with its line
  number and skipped; the other lines still load, so an edit that breaks one
  line never keeps an older list (with its revoked cards) in force. A missing
  file denies every card, with one WARNING until the file appears again.

Reloading is cheap: ``refresh()`` compares the file's mtime, size and inode
with the last load and re-reads it only when they changed. Write the file
atomically (write a temporary file, then rename it over ``access.cards``) so
a reload never sees half a file.

Card ids are personal data: they appear in logs only at DEBUG, and masked
(``mask_card``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

from drivers.masking import mask

_LOGGER = logging.getLogger(__name__)

CARD_MAX_BYTES = 20
"""The door node's card id is at most 20 bytes (PROTOCOLS.md)."""

_DOOR_NAME = re.compile(r"^[a-z0-9-]{1,64}$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
"""ASCII space and tab only: ``str.split()`` would also split on U+001C, U+0085..."""
_BLANKS = " \t"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class CardEntry:
    """One line of the access list."""

    card: str
    doors: frozenset[str] | None
    valid_from: float | None
    valid_until: float | None
    """Exclusive end, seconds since the epoch."""
    line: int


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line that was skipped, with why."""

    line: int
    reason: str


class AccessLineError(ValueError):
    """A line of the access list that does not parse."""


def mask_card(card: str) -> str:
    """The card id for a DEBUG log: all but the last four hex digits hidden."""
    return mask(card, head=0, tail=4)


def normalise_card(text: str) -> str:
    """A card id as the door node reports it: upper-case hex, leading zero bytes dropped.

    Raises:
        AccessLineError: not hex, an odd number of digits, too long, or all zeros.
    """
    if not _HEX.fullmatch(text):
        raise AccessLineError("card id is not hex")
    if len(text) % 2:
        raise AccessLineError("card id has an odd number of hex digits")
    card = text.upper()
    while card.startswith("00"):
        card = card[2:]
    if not card:
        raise AccessLineError("an all-zero card id is not a card")
    if len(card) > 2 * CARD_MAX_BYTES:
        raise AccessLineError(f"card id longer than {CARD_MAX_BYTES} bytes")
    return card


def _parse_time(key: str, value: str, tz: tzinfo | None) -> float:
    """``from=``/``until=`` as epoch seconds; ``until`` of a date is the next midnight."""
    try:
        if "T" in value:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                # tz None: astimezone()/timestamp() use the system's local zone.
                moment = moment.replace(tzinfo=tz) if tz is not None else moment
            return moment.timestamp()
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise AccessLineError(f"{key}= is not YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from exc
    if key == "until":
        day += timedelta(days=1)
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    return midnight.timestamp()


def parse_line(text: str, line: int, *, tz: tzinfo | None = None) -> CardEntry | None:
    """One line of the file: a ``CardEntry``, or None for a blank or comment line.

    Raises:
        AccessLineError: the line does not follow the format (module docstring).
    """
    content = text.split("#", 1)[0].strip(_BLANKS)
    if not content:
        return None
    card_text, *options = _FIELD_SEPARATOR.split(content)
    card = normalise_card(card_text)
    seen: set[str] = set()
    doors: frozenset[str] | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise AccessLineError(f"option {option!r} is not key=value")
        if key in seen:
            raise AccessLineError(f"option {key}= given twice")
        seen.add(key)
        if key == "doors":
            names = value.split(",")
            for name in names:
                if not _DOOR_NAME.fullmatch(name):
                    raise AccessLineError(f"door name {name!r} is not [a-z0-9-]{{1,64}}")
            doors = frozenset(names)
        elif key == "from":
            valid_from = _parse_time(key, value, tz)
        elif key == "until":
            valid_until = _parse_time(key, value, tz)
        else:
            raise AccessLineError(f"unknown option {key}= (known: doors, from, until)")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise AccessLineError("until= is not after from=")
    return CardEntry(card, doors, valid_from, valid_until, line)


def parse_text(
    text: str, *, tz: tzinfo | None = None
) -> tuple[dict[str, list[CardEntry]], list[LineProblem]]:
    """A whole file as text: the entries by card, and the skipped lines."""
    return parse_bytes(text.encode("utf-8", "surrogateescape"), tz=tz)


def parse_bytes(
    data: bytes, *, tz: tzinfo | None = None
) -> tuple[dict[str, list[CardEntry]], list[LineProblem]]:
    """A whole file as read: the entries by card, and the skipped lines.

    Lines are split on ``\n`` alone (a ``\r`` before it is dropped) and each
    is decoded as UTF-8 on its own, so one bad byte costs one line.
    """
    entries: dict[str, list[CardEntry]] = {}
    problems: list[LineProblem] = []
    data = data.removeprefix(_BOM)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(LineProblem(number, f"not UTF-8 (byte {exc.start + 1})"))
            continue
        try:
            entry = parse_line(line, number, tz=tz)
        except AccessLineError as exc:
            problems.append(LineProblem(number, str(exc)))
            continue
        if entry is not None:
            entries.setdefault(entry.card, []).append(entry)
    return entries, problems


class AccessList:
    """The cards allowed in, loaded from a file and reloaded when it changes.

    One instance may serve every door driver of the gateway; it is used from
    the event loop only. ``refresh()`` is cheap (one ``stat``) and is meant to
    be called from a driver's poll loop.
    """

    def __init__(self, path: Path, *, tz: tzinfo | None = None) -> None:
        self.path = path
        self._tz = tz
        self._entries: dict[str, list[CardEntry]] = {}
        self._signature: tuple[int, int, int] | None = None
        self._missing_warned = False
        self._loaded = False
        self.problems: list[LineProblem] = []
        self.loads = 0

    @property
    def loaded(self) -> bool:
        """Whether a file is loaded (False while it is missing: every card is denied)."""
        return self._loaded

    @property
    def card_count(self) -> int:
        return len(self._entries)

    def entries(self) -> Mapping[str, Sequence[CardEntry]]:
        """The loaded entries by card id (a read-only view for status and tests)."""
        return self._entries

    def refresh(self) -> bool:
        """Reload the file if it changed since the last load; return True when it did.

        Never raises: a missing file denies every card (one WARNING), one
        that cannot be read at all (permissions, I/O) keeps the last good list
        (one WARNING per change). Bad lines are skipped (``parse_bytes``).
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._set_missing()
            return False
        except OSError as exc:
            _LOGGER.warning(
                "access list unreadable, keeping the last one: path=%s %s", self.path, exc
            )
            return False
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return False
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._set_missing()
            return False
        except OSError as exc:
            # Remember the signature so the warning is not repeated every poll.
            self._signature = signature
            _LOGGER.warning(
                "access list unreadable, keeping the last one: path=%s %s", self.path, exc
            )
            return False
        self._signature = signature
        self._entries, self.problems = parse_bytes(data, tz=self._tz)
        self._loaded = True
        self._missing_warned = False
        self.loads += 1
        for problem in self.problems:
            _LOGGER.warning(
                "access list line skipped: path=%s line=%d %s",
                self.path,
                problem.line,
                problem.reason,
            )
        _LOGGER.info(
            "access list loaded: path=%s cards=%d skipped_lines=%d",
            self.path,
            len(self._entries),
            len(self.problems),
        )
        return True

    def _set_missing(self) -> None:
        self._entries = {}
        self._signature = None
        self._loaded = False
        self.problems = []
        if not self._missing_warned:
            self._missing_warned = True
            _LOGGER.warning("access list missing, every card is denied: path=%s", self.path)
