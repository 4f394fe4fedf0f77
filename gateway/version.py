"""The gateway's version, from the installed distribution's metadata.

``pyproject.toml`` is the one place the version is written; the status message
(CONTRACT.md, "Status") and the ``estate_gateway_info`` metric read it here.
The ``Version:`` line is read from the ``.dist-info/METADATA`` file on
``sys.path`` that ``importlib.metadata`` would find first, without importing
it: the idle daemon does not otherwise load it (``gateway.lazy_imports``).
"""

from __future__ import annotations

import sys
from pathlib import Path

DISTRIBUTION = "estate-gateway"
UNKNOWN_VERSION = "0+unknown"


def installed_version(distribution: str = DISTRIBUTION) -> str:
    """The distribution's version, or ``UNKNOWN_VERSION`` for a source tree never installed."""
    # Wheel and editable installs name the folder NAME-VERSION.dist-info with
    # the name's "-" and "." as "_" (the wheel spec's escaping).
    prefix = distribution.replace("-", "_").replace(".", "_").lower()
    for entry in sys.path:
        folder = Path(entry or ".")
        try:
            candidates = sorted(folder.glob("*.dist-info"))
        except OSError:
            continue
        for info in candidates:
            name = info.name.removesuffix(".dist-info").partition("-")[0]
            if name.lower() != prefix:
                continue
            version = _version_of(info / "METADATA")
            if version is not None:
                return version
    return UNKNOWN_VERSION


def _version_of(metadata: Path) -> str | None:
    try:
        with metadata.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    break  # the headers end at the first blank line
                key, _, value = line.partition(":")
                if key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        return None
    return None


GATEWAY_VERSION = installed_version()
