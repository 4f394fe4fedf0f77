"""One masking helper for identifiers in logs (cards, EPCs, MACs)."""

from __future__ import annotations

import pytest

from drivers.masking import mask


@pytest.mark.parametrize(
    ("text", "head", "tail", "masked"),
    [
        ("04A1B2C3", 0, 4, "****B2C3"),
        ("A1", 0, 4, "**"),
        ("A4C138000001", 4, 2, "A4C1******01"),
        ("A4C13", 4, 2, "*****"),  # too short to show six characters of it
        ("E2003412DC03011812345678", 4, 4, "E200****************5678"),
        ("E2003412", 4, 4, "********"),
    ],
)
def test_mask(text: str, head: int, tail: int, masked: str) -> None:
    assert mask(text, head=head, tail=tail) == masked
