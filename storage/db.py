"""Async engine construction for SQLite (aiosqlite) and PostgreSQL (asyncpg), tuned per backend."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from storage import sqlite_driver

SQLITE_BUSY_TIMEOUT_MS = 5000

# The driver must not issue BEGIN itself (the `begin` hook does), and statements take one trip to
# the connection's thread instead of four (storage/sqlite_driver.py); the writer's statements
# inside its write transaction take none.
_SQLITE_CONNECT_ARGS: dict[str, Any] = {
    "isolation_level": None,
    "async_creator_fn": sqlite_driver.connect,
}
_SQLITE_WRITER_CONNECT_ARGS: dict[str, Any] = {
    **_SQLITE_CONNECT_ARGS,
    "async_creator_fn": functools.partial(sqlite_driver.connect, inline_writes=True),
}

# Execution option read by the SQLite `begin` hook: how the transaction starts.
SQLITE_BEGIN = "quorum_sqlite_begin"


def create_engine(
    url: str, *, sqlite_foreign_keys: bool = True, sqlite_inline_writes: bool = True
) -> AsyncEngine:
    """An AsyncEngine for `url` (`sqlite+aiosqlite:///path` or `postgresql+asyncpg://…`).

    SQLite: WAL, busy_timeout, foreign keys, synchronous=NORMAL, and transactions that take the
    write lock at BEGIN (`BEGIN IMMEDIATE`) unless the engine was made with `read_only_engine`.
    `sqlite_foreign_keys=False` is for migrations only (batch table rebuilds must not cascade).
    `sqlite_inline_writes=False` keeps every statement of the writer on its connection's thread
    (storage/sqlite_driver.py), for a database on a disk whose writes may stall.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        ensure_sqlite_dir(parsed)
        # The driver must not issue BEGIN itself: the `begin` hook below does, so that reads
        # happen inside the transaction and the write lock is taken up front. Statement
        # parameters (callback targets, payloads) stay out of errors and logs.
        # One writer connection: SQLite has one write lock anyway, and writers that queue on the
        # pool are woken the moment it is free, while writers that queue on the lock sleep in
        # SQLite's busy handler (1, 2, 5 … 100 ms steps), which is what made p99 latency high.
        engine = create_async_engine(
            parsed,
            connect_args=(
                _SQLITE_WRITER_CONNECT_ARGS if sqlite_inline_writes else _SQLITE_CONNECT_ARGS
            ),
            hide_parameters=True,
            pool_size=1,
            max_overflow=0,
            pool_timeout=30,
        )
        _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_async_engine(
            parsed,
            pool_size=10,
            max_overflow=10,
            pool_timeout=10,
            pool_pre_ping=True,
            pool_recycle=1800,
            hide_parameters=True,
        )
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://…"
    )


def read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """An engine for units of work that only read. On SQLite it has a pool of its own (the
    writer engine has a single connection) and begins with a plain deferred BEGIN, so readers
    never wait for, or hold up, the writer (WAL). Never write through it. On PostgreSQL it is
    the writer engine itself."""
    if not is_sqlite(engine):
        return engine
    reader = create_async_engine(
        engine.url,
        connect_args=_SQLITE_CONNECT_ARGS,
        hide_parameters=True,
        pool_size=5,
        max_overflow=10,
    )
    _configure_sqlite(reader, foreign_keys=True)
    return reader.execution_options(**{SQLITE_BEGIN: "DEFERRED"})


def ensure_sqlite_dir(url: URL | str) -> None:
    """Create the directory of a file-backed SQLite database if it does not exist yet."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgresql(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # Readers do not block the writer (and vice versa) in WAL mode.
            cursor.execute("PRAGMA journal_mode=WAL")
            # Wait for the write lock instead of failing at once with SQLITE_BUSY.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            # Durable across application crashes; only an OS crash can lose the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred BEGIN that reads and then writes must upgrade its lock, and two such
        # transactions deadlock (SQLITE_BUSY at once, busy_timeout does not help). Taking the
        # write lock at BEGIN makes writers queue on busy_timeout instead.
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")
