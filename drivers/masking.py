"""Masking identifiers for logs: card ids, tag EPCs, band MACs (STYLE.md §6), in one place.

They are personal data (who went where), so logs carry them only at DEBUG
and partly hidden. Each kind keeps a few characters at its ends, enough to
tell two apart while debugging; a value too short to hide anything is masked
whole.
"""

from __future__ import annotations


def mask(text: str, *, head: int = 0, tail: int = 4) -> str:
    """``text`` with all but ``head`` leading and ``tail`` trailing characters as ``*``."""
    if len(text) <= head + tail:
        return "*" * len(text)
    return text[:head] + "*" * (len(text) - head - tail) + text[len(text) - tail :]
