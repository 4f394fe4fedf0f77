"""The access-list digest (CONTRACT.md 1.1, "Digest").

SHA-256, lower-case hex, of the canonical JSON of
``{"cards": [...], "profiles": {...}}``: keys sorted at every level,
separators ``,`` and ``:``, non-ASCII as UTF-8, the card entries as held
(their six keys) sorted by ``card``, every profile held. ``DigestBuilder``
streams it, so a list of 200,000 cards is hashed without being held in
memory: ``"cards"`` sorts before ``"profiles"``, so the entries come first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def canonical_text(value: Any) -> str:
    """Canonical JSON of any value (unlike a command's form, no key is left out)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def digest_of(entries_sorted: Iterable[Sequence[str]], profiles_canonical: str) -> str:
    """The digest from the entries' canonical texts (sorted by card) and the profiles'.

    ``entries_sorted`` yields batches of texts (a batch per database fetch: a
    row at a time costs three times as much for 200,000 cards).
    """
    sha = hashlib.sha256(b'{"cards":[')
    first = True
    for batch in entries_sorted:
        if not batch:
            continue
        if not first:
            sha.update(b",")
        sha.update(",".join(batch).encode("utf-8"))
        first = False
    sha.update(b'],"profiles":')
    sha.update(profiles_canonical.encode("utf-8"))
    sha.update(b"}")
    return sha.hexdigest()


def digest_of_list(cards: Iterable[Mapping[str, Any]], profiles: Mapping[str, Any]) -> str:
    """The digest of a list given whole (tools and tests); sorts the cards itself."""
    ordered = sorted(cards, key=lambda entry: str(entry["card"]))
    return digest_of([[canonical_text(entry) for entry in ordered]], canonical_text(profiles))


EMPTY_DIGEST = digest_of((), "{}")
