"""``estate-central report``: per gate and epoch, what arrived, what is missing, what is explained.

Ranges come from ``seq_ranges``, where each ingest group appends the seq
ranges it committed (one row per batch, usually), in the same transaction as
the readings: rows are only added, never updated, so concurrent workers never
lock each other there, and ``report`` merges overlapping and adjacent ones.
A missing range is *explained* where a ``gateway.dropped`` reading of the
same epoch covers it (CONTRACT.md: the buffer shed those readings on
purpose); anything else is *missing*. Seqs after the highest one received are
not known to exist yet, so they are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

Range = tuple[int, int]  # inclusive


@dataclass(frozen=True, slots=True)
class EpochReport:
    site: str
    gateway: str
    epoch: str
    received: int
    last_seq: int
    ranges: tuple[Range, ...]
    missing: tuple[Range, ...]
    explained: tuple[Range, ...]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True, slots=True)
class Report:
    epochs: tuple[EpochReport, ...]
    conflicts: tuple[tuple[str, str, str], ...] = field(default=())  # id, stored, received

    @property
    def complete(self) -> bool:
        return all(e.complete for e in self.epochs) and not self.conflicts


def subtract(gaps: Iterable[Range], cover: Iterable[Range]) -> tuple[list[Range], list[Range]]:
    """Split ``gaps`` into the parts ``cover`` does not cover and the parts it does."""
    cover = sorted(cover)
    missing: list[Range] = []
    explained: list[Range] = []
    for lo, hi in gaps:
        at = lo
        for c_lo, c_hi in cover:
            if c_hi < at or c_lo > hi:
                continue
            if c_lo > at:
                missing.append((at, c_lo - 1))
            explained.append((max(at, c_lo), min(hi, c_hi)))
            at = c_hi + 1
            if at > hi:
                break
        if at <= hi:
            missing.append((at, hi))
    return missing, explained


def islands(seqs: Iterable[int]) -> list[Range]:
    """The runs of consecutive seqs in ``seqs`` (any order, repeats allowed)."""
    out: list[Range] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def merge(ranges: Iterable[Range]) -> list[Range]:
    """``ranges`` as few as possible: overlapping and adjacent ones joined."""
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def gaps_between(ranges: Iterable[Range]) -> list[Range]:
    """The seqs from 1 to the last received that are in none of ``ranges``."""
    out: list[Range] = []
    expected = 1
    for lo, hi in sorted(ranges):
        if lo > expected:
            out.append((expected, lo - 1))
        expected = max(expected, hi + 1)
    return out


_RANGES = "SELECT site, gateway, epoch, lo, hi FROM seq_ranges"
_DROPPED = """
SELECT site, gateway, epoch, (body->'data'->>'from_seq')::bigint, (body->'data'->>'to_seq')::bigint
FROM readings WHERE type = 'gateway.dropped'
"""
_CONFLICTS = "SELECT id, stored::text, received::text FROM conflicts ORDER BY id"


def build_report(conn: psycopg.Connection[Any]) -> Report:
    spans: dict[tuple[str, str, str], list[Range]] = {}
    for site, gateway, epoch, lo, hi in conn.execute(_RANGES).fetchall():
        spans.setdefault((site, gateway, epoch), []).append((lo, hi))
    dropped: dict[tuple[str, str, str], list[Range]] = {}
    for site, gateway, epoch, lo, hi in conn.execute(_DROPPED).fetchall():
        if lo is not None and hi is not None:
            dropped.setdefault((site, gateway, epoch), []).append((lo, hi))
    epochs = []
    for key, rows in sorted(spans.items()):
        ranges = merge(rows)  # seqs are unique per epoch: a range's length is its count
        missing, explained = subtract(gaps_between(ranges), dropped.get(key, []))
        epochs.append(
            EpochReport(
                *key,
                received=sum(hi - lo + 1 for lo, hi in ranges),
                last_seq=max(hi for _, hi in ranges),
                ranges=tuple(ranges),
                missing=tuple(missing),
                explained=tuple(explained),
            )
        )
    conflicts = tuple((str(a), str(b), str(c)) for a, b, c in conn.execute(_CONFLICTS).fetchall())
    return Report(tuple(epochs), conflicts)


def _ranges_text(ranges: Iterable[Range]) -> str:
    text = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
    return text or "-"


def format_report(report: Report) -> str:
    """The table ``estate-central report`` prints, one line per gate and epoch."""
    header = (
        f"{'site':<12} {'gateway':<20} {'epoch':<10} {'received':>9} {'last':>9}  "
        f"{'state':<10} {'missing':<20} explained"
    )
    lines = [header]
    for e in report.epochs:
        state = "complete" if e.complete else "MISSING"
        lines.append(
            f"{e.site:<12} {e.gateway:<20} {e.epoch:<10} {e.received:>9} {e.last_seq:>9}  "
            f"{state:<10} {_ranges_text(e.missing):<20} {_ranges_text(e.explained)}"
        )
    lines.append(f"conflicts: {len(report.conflicts)}")
    lines.extend(
        f"  {cid}: stored {stored} received {received}"
        for cid, stored, received in report.conflicts
    )
    return "\n".join(lines)
