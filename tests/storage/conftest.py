"""Storage fixtures: every test runs on a SQLite file and on PostgreSQL (when configured)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.storage.dbs import DB_KINDS, DbKind, fresh_database_url


@pytest.fixture(params=DB_KINDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of each kind."""
    kind: DbKind = request.param
    async with fresh_database_url(kind, tmp_path) as url:
        yield url


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[SqlDatabase]:
    """A migrated database behind the unit-of-work API."""
    await upgrade(db_url)
    db = SqlDatabase(create_engine(db_url))
    try:
        yield db
    finally:
        await db.dispose()
