"""The gateway's version, from the installed distribution's metadata.

``pyproject.toml`` is the one place the version is written; the status message
(CONTRACT.md, "Status") and the ``estate_gateway_info`` metric read it here.
``importlib.metadata`` is loaded by pydantic anyway, so this costs nothing.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "estate-gateway"
UNKNOWN_VERSION = "0+unknown"


def installed_version(distribution: str = DISTRIBUTION) -> str:
    """The distribution's version, or ``UNKNOWN_VERSION`` for a source tree never installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return UNKNOWN_VERSION


GATEWAY_VERSION = installed_version()
