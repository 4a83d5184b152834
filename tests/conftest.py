"""Shared fixtures: real PostgreSQL, databases per backend, an in-process HACS server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common.db import migrate
from services.common.db.engine import Database
from tests.support.harness import Harness, make_settings, running_platform
from tests.support.milvus import MilvusServer
from tests.support.postgres import PostgresServer, create_database


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    external = os.environ.get("HACS_TEST_POSTGRES_ADMIN_URL")
    if external:
        yield external
        return
    server = PostgresServer()
    server.start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    """One real Milvus server for the whole session (tests/support/milvus.py).

    Here, not imported into test modules: an imported fixture is defined once
    per module, and a second server could not start beside the first (its
    embedded etcd's peer port, 2380, is fixed).
    """
    server = MilvusServer()
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using this runs twice: on SQLite (embedded) and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}"
    else:
        admin_url = request.getfixturevalue("postgres_admin_url")
        yield await create_database(admin_url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend (see database_url)."""
    database = Database(database_url)
    await migrate.upgrade(database)
    yield database
    await database.close()


@pytest.fixture
async def hacs(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A HACS server hosting the tenant and record services, in this process, on free ports.

    The model-backed services (embedding, search, RAG, memory) have their own
    module-scoped fixtures: loading a model and starting Milvus per test would
    make the suite slow for no added coverage.
    """
    settings = make_settings(
        tmp_path / "data", database_url, services="tenant,records,sync,rag,memory"
    )
    async with running_platform(settings) as harness:
        yield harness
