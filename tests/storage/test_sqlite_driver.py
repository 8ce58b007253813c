"""The prefetching aiosqlite connection behaves as a DB-API cursor should, in one trip per
statement, and streams results larger than its prefetch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from bot.domain.model import Event
from storage import sqlite_driver
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.storage.builders import NOW
from tests.storage.dbs import sqlite_driver_of


async def test_cursor_executes_fetches_and_reports_like_sqlite3(tmp_path: Path) -> None:
    connection = await sqlite_driver.connect(tmp_path / "raw.db", isolation_level=None)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            assert cursor.description is None
            await cursor.executemany("INSERT INTO t (name) VALUES (?)", [("a",), ("b",), ("c",)])
            assert cursor.rowcount == 3
            await cursor.execute("INSERT INTO t (name) VALUES (?)", ("d",))
            assert cursor.lastrowid == 4
            await cursor.execute("SELECT id, name FROM t ORDER BY id")
            assert [d[0] for d in cursor.description] == ["id", "name"]
            assert await cursor.fetchone() == (1, "a")
            assert list(await cursor.fetchmany(2)) == [(2, "b"), (3, "c")]
            assert list(await cursor.fetchall()) == [(4, "d")]
            assert await cursor.fetchone() is None
            await cursor.execute("UPDATE t SET name = 'z' WHERE id > 2 RETURNING id")
            assert sorted(await cursor.fetchall()) == [(3,), (4,)]
            with pytest.raises(Exception, match="no such table"):
                await cursor.execute("SELECT * FROM missing")
            await cursor.execute("SELECT count(*) FROM t")  # still usable after an error
            assert list(await cursor.fetchall()) == [(4,)]
    finally:
        await connection.close()


async def test_results_beyond_the_prefetch_are_fetched_in_chunks(tmp_path: Path) -> None:
    rows = sqlite_driver.PREFETCH_ROWS * 3 + 7
    connection = await sqlite_driver.connect(tmp_path / "raw.db", isolation_level=None)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TABLE t (n INTEGER)")
            await cursor.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(rows)])
            await cursor.execute("SELECT n FROM t ORDER BY n")
            first = list(await cursor.fetchmany(10))
            rest = list(await cursor.fetchall())
            assert [r[0] for r in first + rest] == list(range(rows))
            # A new statement on a cursor with rows left releases the old result first.
            await cursor.execute("SELECT n FROM t ORDER BY n")
            assert await cursor.fetchone() == (0,)
            await cursor.execute("SELECT count(*) FROM t")
            assert await cursor.fetchone() == (rows,)
    finally:
        await connection.close()


async def _migrated(tmp_path: Path) -> SqlDatabase:
    url = f"sqlite+aiosqlite:///{tmp_path / 'quorum.db'}"
    await upgrade(url)
    return SqlDatabase(create_engine(url))


async def test_sqlalchemy_runs_on_it_including_streamed_reads(tmp_path: Path) -> None:
    database = await _migrated(tmp_path)
    try:
        async with database.unit_of_work() as uow:
            await sqlite_driver_of(uow)
            for n in range(sqlite_driver.PREFETCH_ROWS * 2 + 3):
                await uow.events.append(Event(kind="t", at=NOW, request_id="r", data={"n": n}))
            await uow.commit()
        # verify_chain streams the log (yield_per), which crosses several prefetch chunks.
        async with database.unit_of_work(read_only=True) as uow:
            assert await uow.events.verify_chain() is None
            assert len(await uow.events.list_for("r")) == sqlite_driver.PREFETCH_ROWS * 2 + 3
    finally:
        await database.dispose()


async def test_core_statements_round_trip(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'core.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("s", String))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(table.metadata.create_all)
            result = await connection.execute(insert(table).returning(table.c.id), {"s": "x"})
            assert result.scalar_one() == 1
            await connection.execute(insert(table), [{"s": "y"}, {"s": "z"}])
            assert await connection.scalar(select(func.count()).select_from(table)) == 3
            assert (await connection.execute(text("PRAGMA data_version"))).scalar() is not None
    finally:
        await engine.dispose()


async def test_rollback_is_sent_only_when_there_may_be_something_to_roll_back(
    tmp_path: Path,
) -> None:
    connection = await sqlite_driver.connect(tmp_path / "raw.db", isolation_level=None)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TABLE t (n INTEGER)")
            # Idle, no transaction: nothing is sent to the connection's thread.
            sent = connection._queued
            await connection.rollback()
            assert connection._queued == sent
            # In a transaction: rolled back.
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t VALUES (1)")
            await connection.rollback()
            assert connection._queued == sent + 3
            await cursor.execute("SELECT count(*) FROM t")
            assert await cursor.fetchone() == (0,)
            # A BEGIN still queued (its caller gave up waiting) is rolled back after it runs.
            busy = asyncio.ensure_future(connection._execute(time.sleep, 0.2))
            begin = asyncio.ensure_future(cursor.execute("BEGIN IMMEDIATE"))
            await asyncio.sleep(0)  # both queued; the thread is still sleeping
            begin.cancel()
            await connection.rollback()
            assert not connection.sqlite_connection().in_transaction
            await busy
            await cursor.execute("BEGIN IMMEDIATE")  # the connection is usable as new
            await cursor.execute("ROLLBACK")
    finally:
        await connection.close()


# --- the writer's connection: write transactions on the event loop's thread ------------------


class _Trace:
    """Every statement SQLite runs on a connection, with the thread that ran it."""

    def __init__(self) -> None:
        self.statements: list[tuple[bool, str]] = []  # (on the calling thread?, sql)
        self._caller = threading.get_ident()

    @classmethod
    async def of(cls, connection: sqlite_driver.PrefetchingConnection) -> _Trace:
        trace = cls()
        # Set on the connection's own thread (a reader's sqlite3 connection is bound to it).
        await connection._execute(connection.sqlite_connection().set_trace_callback, trace._record)
        return trace

    def _record(self, sql: str) -> None:
        self.statements.append((threading.get_ident() == self._caller, sql))

    def take(self) -> list[tuple[bool, str]]:
        taken, self.statements = self.statements, []
        return [(inline, sql) for inline, sql in taken if not sql.startswith("PRAGMA busy")]


async def _writer(path: Path) -> sqlite_driver.PrefetchingConnection:
    connection = await sqlite_driver.connect(path, isolation_level=None, inline_writes=True)
    async with connection.cursor() as cursor:
        await cursor.execute("PRAGMA journal_mode=WAL")
        await cursor.execute("CREATE TABLE t (n INTEGER)")
        # The first BEGIN IMMEDIATE asks, once, on the thread, whether the database is in WAL.
        await cursor.execute("BEGIN IMMEDIATE")
        await connection.commit()
    assert connection.wal is True
    return connection


async def test_a_write_transaction_runs_on_the_calling_thread_once_it_has_the_lock(
    tmp_path: Path,
) -> None:
    connection = await _writer(tmp_path / "raw.db")
    trace = await _Trace.of(connection)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT count(*) FROM t")  # outside a transaction: the thread
            assert await cursor.fetchone() == (0,)
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
            assert cursor.rowcount == 2
            await cursor.execute("SELECT n FROM t ORDER BY n")
            assert list(await cursor.fetchall()) == [(1,), (2,)]
            await connection.commit()
        assert trace.take() == [
            (False, "SELECT count(*) FROM t"),
            (True, "BEGIN IMMEDIATE"),
            (True, "INSERT INTO t VALUES (1)"),
            (True, "INSERT INTO t VALUES (2)"),
            (True, "SELECT n FROM t ORDER BY n"),
            (True, "COMMIT"),
        ]
        # Committed for everyone: another connection reads it.
        with sqlite3.connect(tmp_path / "raw.db") as other:
            assert other.execute("SELECT count(*) FROM t").fetchone() == (2,)
        # A failed statement raises as on the thread, and the rollback goes to the thread.
        async with connection.cursor() as cursor:
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t VALUES (3)")
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await cursor.execute("INSERT INTO missing VALUES (1)")
            await connection.rollback()
            await cursor.execute("SELECT count(*) FROM t")
            assert await cursor.fetchone() == (2,)
        assert (False, "ROLLBACK") in trace.take()
    finally:
        await connection.close()


async def test_begin_waits_on_the_thread_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    connection = await _writer(tmp_path / "raw.db")
    trace = await _Trace.of(connection)
    holder = sqlite3.connect(tmp_path / "raw.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    asyncio.get_running_loop().call_later(0.3, holder.commit)
    try:
        async with connection.cursor() as cursor:
            started = time.monotonic()
            await cursor.execute("BEGIN IMMEDIATE")  # waits for the lock, not on the loop
            waited = time.monotonic() - started
            await cursor.execute("INSERT INTO t VALUES (1)")  # then runs inline
            await connection.commit()
        assert waited >= 0.25
        assert ticks >= 10  # the event loop kept running while BEGIN waited
        assert trace.take() == [
            (True, "BEGIN IMMEDIATE"),  # tried inline: SQLITE_BUSY at once
            (False, "BEGIN IMMEDIATE"),  # then on the thread, waiting for the lock
            (True, "INSERT INTO t VALUES (1)"),
            (True, "COMMIT"),
        ]
        # The busy timeout the connection had is restored after the inline attempt.
        async with connection.cursor() as cursor:
            await cursor.execute("PRAGMA busy_timeout")
            assert await cursor.fetchone() == (5000,)
    finally:
        ticker.cancel()
        holder.close()
        await connection.close()


async def _commit_rows(connection: sqlite_driver.PrefetchingConnection, count: int) -> None:
    """`count` write transactions of one 16 KiB row each."""
    async with connection.cursor() as cursor:
        for _ in range(count):
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t VALUES (zeroblob(16384))")
            await connection.commit()


async def test_the_writer_never_checkpoints_its_checkpointer_does_every_64_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "raw.db"
    connection = await _writer(path)
    checkpointer = connection.checkpointer
    assert checkpointer is not None
    trace = await _Trace.of(connection)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("PRAGMA wal_autocheckpoint")
            assert await cursor.fetchone() == (0,)  # its commits never checkpoint by themselves
        size = path.stat().st_size
        await _commit_rows(connection, sqlite_driver.CHECKPOINT_EVERY - 2)  # 1 commit in _writer
        await checkpointer.wait()
        assert checkpointer.completed == 0
        assert path.stat().st_size == size  # the rows are in the WAL only
        await _commit_rows(connection, 1)  # the 64th commit
        await checkpointer.wait()
        assert checkpointer.completed == 1
        assert path.stat().st_size > size + 63 * 16384  # now in the database file too
        await _commit_rows(connection, sqlite_driver.CHECKPOINT_EVERY)
        await checkpointer.wait()
        assert checkpointer.completed == 2
        statements = trace.take()
        assert not [sql for _, sql in statements if "wal_checkpoint" in sql]
        assert [inline for inline, sql in statements if sql == "COMMIT"] == [True] * (
            sqlite_driver.CHECKPOINT_EVERY * 2 - 1
        )
    finally:
        await connection.close()


async def test_the_writer_does_not_wait_for_a_checkpoint(tmp_path: Path) -> None:
    connection = await _writer(tmp_path / "raw.db")
    checkpointer = connection.checkpointer
    assert checkpointer is not None
    release = threading.Event()
    blocked = checkpointer._executor.submit(release.wait)  # the checkpoint's thread is busy
    try:
        await asyncio.wait_for(_commit_rows(connection, sqlite_driver.CHECKPOINT_EVERY * 3), 10)
        assert checkpointer.completed == 0  # the commits went on while it could not run
        release.set()
        await checkpointer.wait()
        assert checkpointer.completed == 1  # one at a time: the later 64ths found it running
    finally:
        release.set()
        blocked.result(5)
        await connection.close()


async def test_readers_never_run_inline(tmp_path: Path) -> None:
    await _writer(tmp_path / "raw.db")
    reader = await sqlite_driver.connect(tmp_path / "raw.db", isolation_level=None)
    trace = await _Trace.of(reader)
    try:
        async with reader.cursor() as cursor:
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t VALUES (1)")
            await reader.commit()
        assert {inline for inline, _ in trace.take()} == {False}
    finally:
        await reader.close()


async def test_the_writer_engine_runs_inline_and_the_reader_engine_does_not(
    tmp_path: Path,
) -> None:
    database = await _migrated(tmp_path)
    try:
        async with database.unit_of_work() as uow:
            writer = await sqlite_driver_of(uow)
            assert writer.runs_inline()
            await uow.events.append(Event(kind="t", at=NOW, request_id="r", data={}))
            await uow.commit()
        async with database.unit_of_work(read_only=True) as uow:
            reader = await sqlite_driver_of(uow)
            assert reader is not writer
            assert not reader.inline_writes
            assert not reader.runs_inline()
            assert len(await uow.events.list_for("r")) == 1
    finally:
        await database.dispose()


async def test_an_inline_commit_gives_the_event_loop_a_turn(tmp_path: Path) -> None:
    connection = await _writer(tmp_path / "raw.db")
    ran: list[int] = []
    try:
        async with connection.cursor() as cursor:
            for n in range(3):
                other = asyncio.get_running_loop().call_soon(ran.append, n)
                await cursor.execute("BEGIN IMMEDIATE")
                await cursor.execute("INSERT INTO t VALUES (?)", (n,))
                assert ran == list(range(n))  # the transaction itself never leaves the loop
                await connection.commit()
                assert ran == list(range(n + 1)), other  # its commit did
    finally:
        await connection.close()


async def test_without_wal_the_writer_uses_its_thread_for_everything(tmp_path: Path) -> None:
    # Without WAL a COMMIT waits for readers to end their transactions, which needs the loop.
    connection = await sqlite_driver.connect(
        tmp_path / "raw.db", isolation_level=None, inline_writes=True
    )
    trace = await _Trace.of(connection)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("PRAGMA journal_mode=DELETE")
            await cursor.execute("CREATE TABLE t (n INTEGER)")
            trace.take()
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t VALUES (1)")
            await connection.commit()
        assert connection.wal is False
        assert trace.take() == [
            (False, "PRAGMA journal_mode"),
            (False, "BEGIN IMMEDIATE"),
            (False, "INSERT INTO t VALUES (1)"),
            (False, "COMMIT"),
        ]
    finally:
        await connection.close()
