"""The version comes from the package metadata, whose source is pyproject.toml."""

from __future__ import annotations

import tomllib

from gateway.version import GATEWAY_VERSION, UNKNOWN_VERSION, installed_version
from tests.daemon import REPO


def test_the_version_is_pyprojects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == GATEWAY_VERSION


def test_a_distribution_that_is_not_installed_has_an_unknown_version() -> None:
    assert installed_version("estate-gateway-never-installed") == UNKNOWN_VERSION
