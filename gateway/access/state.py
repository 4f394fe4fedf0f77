"""The ``{root}/access/state`` message and the status message's ``access`` (CONTRACT.md 1.1)."""

from __future__ import annotations

import json
from typing import Any

from gateway.access.store import AccessState
from gateway.timefmt import rfc3339


def state_dict(state: AccessState, *, at: float) -> dict[str, Any]:
    """The state message as a dict (``at`` in seconds since the epoch)."""
    pending = state.pending
    error = state.last_error
    return {
        "v": 1,
        "version": state.version,
        "cards": state.cards,
        "digest": state.digest,
        "at": rfc3339(at),
        "pending": (
            {"version": pending.version, "parts": pending.parts, "received": pending.received}
            if pending is not None
            else None
        ),
        "ignored": state.ignored,
        "last_error": (
            {"version": error.version, "reason": error.reason, "at": rfc3339(error.at)}
            if error is not None
            else None
        ),
    }


def state_message(state: AccessState, *, at: float) -> str:
    return json.dumps(state_dict(state, at=at), separators=(",", ":"))


def status_summary(state: AccessState) -> dict[str, Any]:
    """``access`` of the status message: the list the gateway decides with."""
    return {"version": state.version, "cards": state.cards, "digest": state.digest}
