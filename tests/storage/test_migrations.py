"""The shipped migrations produce exactly the models' schema, and go back down to nothing."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from storage.db import create_engine
from storage.migrate import current_revision, downgrade, head_revision, upgrade
from storage.tables import metadata


def _diffs(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_models_and_downgrade_removes_everything(db_url: str) -> None:
    assert await current_revision(db_url) is None

    await upgrade(db_url)

    assert await current_revision(db_url) == head_revision()
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diffs) == []
            assert await connection.run_sync(_tables) == {*metadata.tables, "alembic_version"}

        await upgrade(db_url)  # already at head: nothing to do, no error
        await downgrade(db_url, "base")

        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) <= {"alembic_version"}
        assert await current_revision(db_url) is None

        await upgrade(db_url)  # and back up again from empty
        async with engine.connect() as connection:
            assert await connection.run_sync(_diffs) == []
    finally:
        await engine.dispose()
