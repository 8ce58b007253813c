"""Throwaway databases for tests: a SQLite file, or an isolated corner of a shared PostgreSQL.

Reusable by any test suite: parametrize over `DB_KINDS` and enter `fresh_database_url`.
PostgreSQL runs when QUORUM_TEST_POSTGRES_URL is set; without it the test is skipped with the
reason shown, except under CI=true, where a missing or unreachable server fails the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, NoReturn

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from storage import sqlite_driver
from storage.uow import SqlUnitOfWork

POSTGRES_ENV = "QUORUM_TEST_POSTGRES_URL"

DbKind = Literal["sqlite", "postgres"]
DB_KINDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def postgres_admin_url() -> str:
    """The server URL from the environment; skips (or fails under CI) when it is not set."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        _unavailable(
            f"PostgreSQL tests need {POSTGRES_ENV}, "
            "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        )
    return url


@asynccontextmanager
async def fresh_database_url(kind: DbKind, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database's SQLAlchemy URL, removed again on exit.

    SQLite: a file in `tmp_path`. PostgreSQL: a new login role with a schema of its own name in
    the shared database; PostgreSQL's default search_path (`"$user", public`) puts every table
    the role creates there, so the plain URL isolates the test without any driver options.
    """
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
        return

    admin_url = make_url(postgres_admin_url())
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"quorum_t_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    try:
        async with admin.connect() as connection:
            # Identifiers and the password are generated hex strings: interpolation is safe.
            await connection.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
            await connection.exec_driver_sql(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
    except (OSError, DBAPIError) as exc:
        await admin.dispose()
        where = admin_url.render_as_string(hide_password=True)
        _unavailable(f"PostgreSQL at {where} is unusable: {type(exc).__name__}: {exc}")
    try:
        yield admin_url.set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"),
                {"n": name},
            )
            await connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            await connection.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        await admin.dispose()


async def sqlite_driver_of(uow: SqlUnitOfWork) -> sqlite_driver.PrefetchingConnection:
    """The SQLite driver connection under a unit of work's session."""
    raw = await uow.session.connection()
    driver = (await raw.get_raw_connection()).driver_connection
    assert isinstance(driver, sqlite_driver.PrefetchingConnection)
    return driver
