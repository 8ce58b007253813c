"""Engine set-up: SQLite pragmas and write locking, URL handling, health checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import SQLITE_BUSY_TIMEOUT_MS, create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.storage.builders import a_request


async def test_sqlite_pragmas_are_in_effect(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'dir' / 'q.db'}")
    try:
        async with engine.connect() as connection:
            values = {
                pragma: (await connection.exec_driver_sql(f"PRAGMA {pragma}")).scalar()
                for pragma in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        await engine.dispose()
    assert values == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
        "synchronous": 1,  # NORMAL
    }
    assert (tmp_path / "nested" / "dir" / "q.db").exists()


async def test_sqlite_writer_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)
    database = SqlDatabase(create_engine(url))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with database.unit_of_work() as uow:
            await uow.requests.get("req-1")  # a read only, but in a writing unit of work
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            # Readers are not blocked meanwhile (WAL, deferred BEGIN).
            async with database.unit_of_work(read_only=True) as reader:
                assert await reader.requests.get("req-1") is None
            await uow.requests.add(a_request())
            await uow.commit()
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("ROLLBACK")
    finally:
        other.close()
        await database.dispose()


async def test_ping(database: SqlDatabase) -> None:
    await database.ping()


async def test_ping_raises_when_the_database_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once. (A SQLite
    # file that cannot be opened would do too, but aiosqlite then stops its worker thread
    # without waiting, which outlives the test's event loop.)
    database = SqlDatabase(create_engine("postgresql+asyncpg://quorum@127.0.0.1:1/quorum"))
    try:
        with pytest.raises(ConnectionRefusedError):
            await database.ping()
    finally:
        await database.dispose()


def test_unsupported_url_is_refused_without_showing_the_password() -> None:
    with pytest.raises(ValueError, match="unsupported database URL") as raised:
        create_engine("mysql+aiomysql://quorum:hunter2@db.example.com/quorum")
    assert "hunter2" not in str(raised.value)
