"""The local card file: format, reload, bad lines, validity, doors.

Cards are decided as the daemon decides them: ``FileAccessList`` over the file,
judged by ``drivers.access_rules.decide`` (through ``DoorAccess``).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.access import (
    AccessLineError,
    AccessList,
    LineProblem,
    mask_card,
    normalise_card,
    parse_line,
    parse_text,
)
from drivers.access_file import FileAccessList
from drivers.access_rules import Decision, DecisionReason, DoorAccess

REPO = Path(__file__).resolve().parents[2]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class FixedTime:
    """Trusted time stood still at one instant, synced."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def is_synced(self) -> bool:
        return True


def decide(file: AccessList, card: str, door: str, now: float) -> Decision:
    """What a door decides for ``card`` with this file at ``now``."""
    listed = FileAccessList(file.path)
    listed.file = file  # the file as the test loaded (or failed to load) it
    return DoorAccess(listed, FixedTime(now), UTC).decide(card, door, door_refuses_cards=False)


def denied(reason: DecisionReason) -> Decision:
    return Decision(False, reason, None)


GRANTED = Decision(True, DecisionReason.LISTED, None)


def make(tmp_path: Path, text: str) -> AccessList:
    path = tmp_path / "access.cards"
    path.write_text(text, encoding="utf-8")
    access = AccessList(path, tz=UTC)
    assert access.refresh()
    return access


def rewrite(path: Path, text: str) -> None:
    """Replace the file atomically and make sure its mtime moves (coarse mtime clocks)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.utime(tmp, ns=(before + 1_000_000_000, before + 1_000_000_000))
    tmp.replace(path)


NOW = ts("2026-06-15T12:00:00")


def test_plain_card_any_door_any_time(tmp_path: Path) -> None:
    access = make(tmp_path, "04A1B2C3\n")
    assert decide(access, "04A1B2C3", "door-east-1", NOW) == GRANTED
    assert decide(access, "04a1b2c3", "door-west-1", 0.0).granted
    assert decide(access, "04A1B2C4", "door-east-1", NOW) == denied(DecisionReason.NOT_LISTED)


def test_comments_blank_lines_and_spacing(tmp_path: Path) -> None:
    text = "# header\n\n   \n  04a1b2c3   doors=door-east-1   # Mrs Wang\n#04A1B2C4\n"
    access = make(tmp_path, text)
    assert access.card_count == 1
    assert access.problems == []
    assert access.entries()["04A1B2C3"][0].line == 4


def test_leading_zero_bytes_are_padding(tmp_path: Path) -> None:
    access = make(tmp_path, "0004A1B2C3\n")
    assert decide(access, "04A1B2C3", "d", NOW).granted


def test_doors(tmp_path: Path) -> None:
    access = make(tmp_path, "04A1B2C3 doors=door-east-1,door-west-1\n")
    assert decide(access, "04A1B2C3", "door-east-1", NOW).granted
    assert decide(access, "04A1B2C3", "door-west-1", NOW).granted
    assert decide(access, "04A1B2C3", "door-north-1", NOW) == denied(
        DecisionReason.DOOR_NOT_ALLOWED
    )


def test_validity_dates_are_inclusive(tmp_path: Path) -> None:
    access = make(tmp_path, "04A1B2C3 from=2026-06-01 until=2026-06-30\n")
    assert decide(access, "04A1B2C3", "d", ts("2026-05-31T23:59:59")) == denied(
        DecisionReason.NOT_YET_VALID
    )
    assert decide(access, "04A1B2C3", "d", ts("2026-06-01T00:00:00")).granted
    assert decide(access, "04A1B2C3", "d", ts("2026-06-30T23:59:59")).granted
    assert decide(access, "04A1B2C3", "d", ts("2026-07-01T00:00:00")) == denied(
        DecisionReason.EXPIRED
    )


def test_validity_with_times_and_open_ends(tmp_path: Path) -> None:
    text = (
        "0A0B from=2026-06-15T08:00 until=2026-06-15T18:00\n"
        "0C0D until=2026-06-01\n"
        "0E0F from=2026-07-01\n"
        "1011 from=2026-06-15T10:00+08:00\n"
    )
    access = make(tmp_path, text)
    assert (
        decide(access, "0A0B", "d", ts("2026-06-15T07:59:59")).reason
        is DecisionReason.NOT_YET_VALID
    )
    assert decide(access, "0A0B", "d", ts("2026-06-15T08:00:00")).granted
    assert decide(access, "0A0B", "d", ts("2026-06-15T18:00:00")).reason is DecisionReason.EXPIRED
    assert decide(access, "0C0D", "d", 0.0).granted
    assert not decide(access, "0C0D", "d", NOW).granted
    assert not decide(access, "0E0F", "d", NOW).granted
    # An explicit offset wins over the list's zone: 10:00+08:00 is 02:00 UTC.
    assert decide(access, "1011", "d", ts("2026-06-15T02:00:00")).granted
    assert not decide(access, "1011", "d", ts("2026-06-15T01:59:59")).granted


def test_time_zone_of_dates(tmp_path: Path) -> None:
    path = tmp_path / "access.cards"
    path.write_text("04A1B2C3 from=2026-06-15\n", encoding="utf-8")
    access = AccessList(path, tz=timezone(timedelta(hours=8)))
    access.refresh()
    # Midnight in UTC+8 is 16:00 UTC the day before.
    assert decide(access, "04A1B2C3", "d", ts("2026-06-14T16:00:00")).granted
    assert not decide(access, "04A1B2C3", "d", ts("2026-06-14T15:59:59")).granted


def test_several_lines_for_one_card(tmp_path: Path) -> None:
    text = (
        "04A1B2C3 doors=door-east-1 until=2026-06-01\n04A1B2C3 doors=door-west-1 from=2026-06-01\n"
    )
    access = make(tmp_path, text)
    assert decide(access, "04A1B2C3", "door-west-1", NOW).granted
    # The east line is the one for this door: its period is the reason, not "wrong door".
    assert decide(access, "04A1B2C3", "door-east-1", NOW) == denied(DecisionReason.EXPIRED)
    assert decide(access, "04A1B2C3", "door-north-1", NOW) == denied(
        DecisionReason.DOOR_NOT_ALLOWED
    )


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("XYZ1", "not hex"),
        ("ABC", "odd number"),
        ("0000", "all-zero"),
        ("AA" * 21, "longer than 20 bytes"),
        ("04A1 door=east", "unknown option door="),
        ("04A1 doors", "not key=value"),
        ("04A1 doors=", "not key=value"),
        ("04A1 doors=East-Gate", "door name .* is not"),
        ("04A1 doors=a,,b", "door name .* is not"),
        ("04A1 from=2026-13-01", "from= is not"),
        ("04A1 until=tomorrow", "until= is not"),
        ("04A1 from=2026-01-02 until=2026-01-01", "not after"),
        ("04A1 doors=a doors=b", "given twice"),
    ],
)
def test_bad_lines(line: str, fragment: str) -> None:
    with pytest.raises(AccessLineError, match=fragment):
        parse_line(line, 1)


def test_bad_lines_are_skipped_with_line_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "# list\n04A1B2C3\nnot-a-card\n04A1B2C4 colour=red\n04A1B2C5\n"
    with caplog.at_level(logging.WARNING, logger="drivers.access"):
        access = make(tmp_path, text)
    assert [p.line for p in access.problems] == [3, 4]
    assert access.card_count == 2
    assert decide(access, "04A1B2C5", "d", NOW).granted
    messages = [r.getMessage() for r in caplog.records]
    assert any("line=3" in m and "not hex" in m for m in messages)
    assert any("line=4" in m and "unknown option colour=" in m for m in messages)
    # A skipped line's card id is not echoed into the log.
    assert not any("04A1B2C4" in m for m in messages)


def test_parse_text_returns_problems() -> None:
    entries, problems = parse_text("04A1\nzz\n")
    assert list(entries) == ["04A1"]
    assert problems == [LineProblem(2, "card id is not hex")]


def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    access = make(tmp_path, "04A1B2C3\n")
    assert not access.refresh()  # unchanged: nothing re-read
    assert access.loads == 1
    rewrite(access.path, "04A1B2C4\n")
    assert access.refresh()
    assert access.loads == 2
    assert not decide(access, "04A1B2C3", "d", NOW).granted
    assert decide(access, "04A1B2C4", "d", NOW).granted


def test_reload_notices_same_mtime_different_size(tmp_path: Path) -> None:
    access = make(tmp_path, "04A1B2C3\n")
    stat = access.path.stat()
    access.path.write_text("04A1B2C3\n04A1B2C4\n", encoding="utf-8")
    os.utime(access.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert access.refresh()
    assert decide(access, "04A1B2C4", "d", NOW).granted


def test_missing_file_denies_all_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "absent.cards"
    access = AccessList(path)
    with caplog.at_level(logging.WARNING, logger="drivers.access"):
        for _ in range(5):
            assert not access.refresh()
    warnings = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(warnings) == 1
    assert not access.loaded
    assert decide(access, "04A1B2C3", "d", NOW) == denied(DecisionReason.NOT_LISTED)
    # It appears: loaded. It goes: denied again, and warned again once.
    rewrite(path, "04A1B2C3\n")
    assert access.refresh()
    assert decide(access, "04A1B2C3", "d", NOW).granted
    path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="drivers.access"):
        access.refresh()
        access.refresh()
    assert len([r for r in caplog.records if "missing" in r.getMessage()]) == 1
    assert decide(access, "04A1B2C3", "d", NOW).reason is DecisionReason.NOT_LISTED


def test_empty_file_denies_unknown(tmp_path: Path) -> None:
    access = make(tmp_path, "")
    assert access.loaded
    assert decide(access, "04A1B2C3", "d", NOW) == denied(DecisionReason.NOT_LISTED)


def test_latin1_byte_costs_its_line_not_the_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 04A1B2C4 is revoked in the new list, whose one comment was typed in Latin-1:
    # the new list is in force (the revocation holds), the bad line is reported.
    access = make(tmp_path, "04A1B2C3\n04A1B2C4\n")
    new = b"04A1B2C3  # Jos\xe9, flat 4\n04A1B2C5\n"
    tmp = access.path.with_name("new.tmp")
    tmp.write_bytes(new)
    os.utime(tmp, ns=(10**18, 10**18))
    tmp.replace(access.path)
    with caplog.at_level(logging.WARNING, logger="drivers.access"):
        assert access.refresh()
    assert not decide(access, "04A1B2C4", "d", NOW).granted  # revoked: not a stale list
    assert decide(access, "04A1B2C5", "d", NOW).granted
    assert access.problems == [LineProblem(1, "not UTF-8 (byte 16)")]
    assert any("line=1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "separator", ["\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\v", "\f", "\r"]
)
def test_only_newline_separates_lines(separator: str) -> None:
    entries, problems = parse_text(f"04A1B2C3 # x{separator}CAFEBABE\n")
    assert list(entries) == ["04A1B2C3"]
    assert problems == []
    # Nor does it separate fields: a card id with one in it is not a card.
    entries, problems = parse_text(f"04A1B2C3{separator}CAFEBABE\n")
    assert entries == {}
    assert [p.line for p in problems] == [1]


def test_crlf_and_tabs_are_fine() -> None:
    entries, problems = parse_text("04A1B2C3\tdoors=door-a\r\n04A1B2C4 \t # x\r\n")
    assert problems == []
    assert sorted(entries) == ["04A1B2C3", "04A1B2C4"]
    assert entries["04A1B2C3"][0].doors == frozenset({"door-a"})


def test_utf8_bom_does_not_drop_the_first_card(tmp_path: Path) -> None:
    path = tmp_path / "bom.cards"
    path.write_bytes("\ufeff04A1B2C3\n04A1B2C4\n".encode())
    access = AccessList(path, tz=UTC)
    assert access.refresh()
    assert access.problems == []
    assert decide(access, "04A1B2C3", "d", NOW).granted
    assert decide(access, "04A1B2C4", "d", NOW).granted


def test_mask_and_normalise() -> None:
    assert mask_card("04A1B2C3") == "****B2C3"
    assert mask_card("A1") == "**"
    assert normalise_card("0004a1") == "04A1"


def test_shipped_example_file_is_clean() -> None:
    access = AccessList(REPO / "access" / "cards.txt")
    assert access.refresh()
    assert access.problems == []
    assert access.card_count >= 3
