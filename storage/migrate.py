"""Apply or revert the Alembic migrations shipped in `storage/migrations` (for `quorum migrate`).

Alembic is configured in code: the URL never goes into its config (nor any output), and the
connection is shared with env.py, so these coroutines work inside a running event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, make_url, text

from storage.db import create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x51554F52554D + 1  # next to the event chain's lock key, never equal


def alembic_config() -> Config:
    """Alembic's configuration for the packaged migrations (no URL, no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this version of Quorum."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (default: the newest)."""
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` removes every table)."""
    await _run(url, "downgrade", revision)


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None for an empty database."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


async def _run(url: str, direction: Literal["upgrade", "downgrade"], revision: str) -> None:
    # Foreign keys off on SQLite: batch migrations rebuild a table by copying and dropping it,
    # which with ON DELETE CASCADE enforced would delete the rows that refer to it.
    engine = create_engine(url, sqlite_foreign_keys=False)
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # Several replicas starting at once migrate one after the other (SQLite's
                # BEGIN IMMEDIATE serialises them already).
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_run_alembic, direction, revision)
            if engine.dialect.name == "sqlite":
                await connection.run_sync(_check_sqlite_foreign_keys, url)
    finally:
        await engine.dispose()


def _run_alembic(
    connection: Connection, direction: Literal["upgrade", "downgrade"], revision: str
) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _check_sqlite_foreign_keys(connection: Connection, url: str) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        where = make_url(url).render_as_string(hide_password=True)
        raise RuntimeError(f"migration left {len(broken)} broken foreign key(s) in {where}")
