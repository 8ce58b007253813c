"""Fixtures: a running Quorum (fake Slack, fake pipeline) on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import DEPUTIES_POLICY, Env, running_env
from tests.storage.dbs import DB_KINDS, DbKind, fresh_database_url


@pytest.fixture(params=DB_KINDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    kind: DbKind = request.param
    async with fresh_database_url(kind, tmp_path) as url:
        yield url


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    async with running_env(db_url) as running:
        yield running


@pytest.fixture
async def deputies_env(db_url: str) -> AsyncIterator[Env]:
    """A running Quorum whose policy lets anyone delegate to the `deputies` team only."""
    async with running_env(db_url, policy=DEPUTIES_POLICY) as running:
        yield running
