"""Fixtures for the fleet tests: one RabbitMQ cluster and one PostgreSQL for the package.

A cluster takes about 40 s to boot on the 2-core machine, so the tests here share
one; a test that kills a node starts it again before it ends. Each test gets
its own database, site name and ingest queue, so tests never see each
other's data. Both stop when this package's tests are done, so they do not
load the machine while the rest of the suite runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.cluster import RabbitCluster
from tests.postgres import Postgres


@pytest.fixture(scope="package")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def pg_server() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def site() -> str:
    return f"t{os.urandom(3).hex()}"


@pytest.fixture
def dsn(pg_server: Postgres, site: str) -> str:
    """A fresh database for this test."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {site}")
    return pg_server.dsn.replace("dbname=estate", f"dbname={site}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
