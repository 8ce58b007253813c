"""aiosqlite connections whose statements cost one trip to the connection's thread, not four.

aiosqlite runs every sqlite3 call on the connection's own thread, and each call is a round trip:
queue the call, wake the thread, then wake the event loop through its self-pipe. SQLAlchemy's
adapter makes four of them for a SELECT (make a cursor, execute, fetch, close) and three for a
write. Measured here, a trip costs about 90 µs of CPU, more than SQLite spends on a small
statement, and the vote writer runs about ten statements per group commit.

`connect` returns an `aiosqlite.Connection` whose cursors execute, fetch the first rows and
close in one trip. Results larger than `PREFETCH_ROWS` keep their sqlite3 cursor open and are
fetched in further trips, so a streamed read (`yield_per`) still holds only a chunk in memory.
Nothing else changes: same thread, same sqlite3 connection, same transaction semantics. The
engine passes `connect` to SQLAlchemy's aiosqlite dialect as `async_creator_fn`.

The writer's connection (`connect(..., inline_writes=True)`) goes further: its write
transactions run on the event loop's thread, with no trip at all. A trip's cost is not only its
CPU: under load, the thread's answer waits in the event loop's queue behind every request that
is ready, and the vote writer's group commit took ~35 ms for its ten trips (~22 ms for two)
while the clicks waiting on it left the loop idle; inline, it takes ~5 ms. Only what cannot
block runs inline:
- BEGIN IMMEDIATE is tried with a busy timeout of 0. When another connection (another process)
  holds the write lock, it is sent to the thread instead, to wait there (busy_timeout);
- once it has returned, the transaction holds SQLite's write lock, so its statements never wait
  for a lock (WAL readers do not block a writer): they cost SQLite's CPU on pages in memory,
  ~10-50 µs for the writer's small, indexed statements;
- COMMIT appends the transaction's pages to the WAL file (synchronous=NORMAL: no fsync). The
  writer never checkpoints, inline or otherwise: its automatic checkpoint is off, and every
  `CHECKPOINT_EVERY`-th commit starts a PASSIVE checkpoint on a connection and thread of its own
  (`Checkpointer`) without waiting for it. A checkpoint copies pages into the database file
  and fsyncs it, 10-50 ms here; awaited by the writer, it held up every click waiting for the
  next group commit (WAL lets a checkpoint run beside the writer);
- a ROLLBACK, and anything while a call is queued for the thread (a cancelled caller's), go to
  the thread;
- an inline COMMIT then yields one turn to the event loop, as a trip did: a loop of short
  transactions (the retention sweep's chunks, the timers' re-arm) never holds the loop for its
  whole length;
- all of this in WAL mode only (asked once per connection). Where WAL cannot be enabled (some
  network or container filesystems), a COMMIT must wait for readers to end their transactions,
  which needs the event loop: that connection then uses its thread for everything, as readers do.
Readers (a pool of their own, `inline_writes=False`) always use the thread: a read may be long.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
from aiosqlite.context import Result

__all__ = ["PREFETCH_ROWS", "Checkpointer", "PrefetchingConnection", "PrefetchingCursor", "connect"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

PREFETCH_ROWS = 256  # rows fetched together with the execute, in the same trip
CHECKPOINT_EVERY = 64  # the writer's commits per checkpoint (by its `Checkpointer`)
_BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"

# (description, first rows, the cursor if more rows remain else None, rowcount, lastrowid)
_Executed = tuple[Any, list[Any], sqlite3.Cursor | None, int, int | None]


def _execute(connection: sqlite3.Connection, sql: str, parameters: Any, *, many: bool) -> _Executed:
    """Runs on the connection's thread: execute, fetch a first chunk, close when exhausted."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows: list[Any] = cursor.fetchmany(PREFETCH_ROWS) if description is not None else []
        more = description is not None and len(rows) == PREFETCH_ROWS
        outcome: _Executed = (
            description,
            rows,
            cursor if more else None,
            cursor.rowcount,
            cursor.lastrowid,
        )
    except BaseException:
        cursor.close()
        raise
    if not more:
        cursor.close()
    return outcome


def _in_wal_mode(connection: sqlite3.Connection) -> bool:
    """Runs on the connection's thread: whether the database is in WAL mode."""
    (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    return str(mode).lower() == "wal"


class Checkpointer:
    """Moves the WAL into the database file as far as readers allow (PASSIVE: waits for
    nobody), on a sqlite3 connection and a thread of its own, so the writer never waits for
    the checkpoint's I/O and fsync. One checkpoint at a time: while one runs, `start` does
    nothing (the next `CHECKPOINT_EVERY`-th commit starts another)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        self._connector = connector
        self._connection: sqlite3.Connection | None = None  # used on the executor's thread only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._running: asyncio.Future[None] | None = None
        self.completed = 0

    def start(self) -> None:
        if self._running is not None and not self._running.done():
            return
        self._running = asyncio.get_running_loop().run_in_executor(self._executor, self._run)
        self._running.add_done_callback(self._finished)

    async def wait(self) -> None:
        """Until the checkpoint under way, if any, has finished (tests, and closing)."""
        if self._running is not None:
            await asyncio.wait([self._running])

    async def close(self) -> None:
        await self.wait()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _run(self) -> None:
        if self._connection is None:
            self._connection = self._connector()
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _finished(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            # The WAL keeps growing until a checkpoint succeeds; the next one is tried soon.
            log.warning("SQLite checkpoint failed: %s", error)
            return
        self.completed += 1


def _fetch_rest(cursor: sqlite3.Cursor, size: int | None) -> tuple[list[Any], bool]:
    """Runs on the connection's thread: more rows, and whether the cursor is now exhausted
    (then it is closed)."""
    rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
    done = size is None or len(rows) < size
    if done:
        cursor.close()
    return rows, done


class PrefetchingCursor(aiosqlite.Cursor):
    """An aiosqlite cursor that executes and fetches in one trip to the connection's thread."""

    def __init__(self, conn: PrefetchingConnection) -> None:
        # No sqlite3 cursor yet: `execute` makes one on the connection's thread.
        self.iter_chunk_size = conn._iter_chunk_size
        self._conn = conn
        self._connection = conn
        self._open: sqlite3.Cursor | None = None  # set while rows remain beyond the buffer
        self._rows: deque[Any] = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1
        self._row_factory: Any = None

    async def _trip(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `function` on the connection's thread (aiosqlite's own way, one round trip)."""
        result = await self._execute(function, *args, **kwargs)  # type: ignore[no-untyped-call]
        return cast(_T, result)

    async def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `function` inline inside the writer's write transaction, else on the thread."""
        if self._connection.runs_inline():
            return function(*args, **kwargs)
        return await self._trip(function, *args, **kwargs)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> PrefetchingCursor:
        await self._release()
        owner: PrefetchingConnection = self._connection
        connection = owner.sqlite_connection()
        begin = owner.inline_writes and sql.startswith(_BEGIN_IMMEDIATE)
        if begin and owner.wal is None:  # once per connection, on its thread
            owner.wal = await self._trip(_in_wal_mode, connection)
        begin = begin and bool(owner.wal)
        executed: _Executed | None = None
        if begin and owner.idle():
            executed = owner.begin_inline(sql, parameters)  # None: the lock is taken
        if executed is None:
            executed = await self._call(_execute, connection, sql, parameters, many=many)
        if begin:
            owner.write_locked = True
        self._description, rows, self._open, self._rowcount, self._lastrowid = executed
        self._rows = deque(rows)
        return self

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> aiosqlite.Cursor:
        return await self._run(sql, [] if parameters is None else parameters, many=False)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> aiosqlite.Cursor:
        return await self._run(sql, parameters, many=True)

    async def executescript(self, sql_script: str) -> aiosqlite.Cursor:
        await self._release()
        await self._trip(self._connection.sqlite_connection().executescript, sql_script)
        self._description, self._rows, self._rowcount = None, deque(), -1
        return self

    async def _more(self, size: int | None) -> None:
        if self._open is not None:
            rows, done = await self._call(_fetch_rest, self._open, size)
            self._rows.extend(rows)
            if done:
                self._open = None

    async def fetchone(self) -> sqlite3.Row | None:
        if not self._rows:
            await self._more(PREFETCH_ROWS)
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Iterable[sqlite3.Row]:
        wanted = self._arraysize if size is None else size
        if len(self._rows) < wanted:
            await self._more(max(wanted - len(self._rows), PREFETCH_ROWS))
        return [self._rows.popleft() for _ in range(min(wanted, len(self._rows)))]

    async def fetchall(self) -> Iterable[sqlite3.Row]:
        await self._more(None)
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def _release(self) -> None:
        if self._open is not None:
            cursor, self._open = self._open, None
            await self._call(cursor.close)

    async def close(self) -> None:
        await self._release()
        self._rows.clear()

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    @property
    def description(self) -> Any:
        return self._description

    @property
    def row_factory(self) -> Any:
        return self._row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        raise NotImplementedError("row factories are not supported by the prefetching cursor")

    @property
    def connection(self) -> sqlite3.Connection:
        return self._connection.sqlite_connection()


class PrefetchingConnection(aiosqlite.Connection):
    """An aiosqlite connection whose `cursor()` costs no trip (see the module docstring), and
    whose `rollback()` costs none when there is nothing to roll back: SQLAlchemy's pool rolls
    back every connection it gets back, and most come back just after their commit."""

    def __init__(
        self,
        connector: Callable[[], sqlite3.Connection],
        iter_chunk_size: int,
        *,
        inline_writes: bool = False,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        super().__init__(connector, iter_chunk_size)
        self.inline_writes = inline_writes
        self.checkpointer = checkpointer  # the writer's: its commits never checkpoint
        self.write_locked = False  # inside a BEGIN IMMEDIATE that has returned
        # Whether the database is in WAL mode (None: not asked yet). Without WAL a COMMIT waits
        # for readers to finish, and they need the event loop to finish: never inline then.
        self.wal: bool | None = None
        self._commits = 0
        # Calls queued for the connection's thread, and calls it has finished (written by that
        # thread): equal when nothing is queued or running.
        self._queued = 0
        self._finished = 0

    async def _execute(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        def run() -> _T:
            try:
                return fn(*args, **kwargs)
            finally:
                self._finished += 1

        self._queued += 1
        result = await super()._execute(run)  # type: ignore[no-untyped-call]
        return cast(_T, result)

    async def rollback(self) -> None:
        self.write_locked = False
        # Idle and outside a transaction: ROLLBACK would do nothing. Anything still queued (a
        # BEGIN whose caller was cancelled, say) may open one, so then it is sent after it.
        if self.idle() and not self.sqlite_connection().in_transaction:
            return
        await super().rollback()

    async def commit(self) -> None:
        inline = self.runs_inline()
        self.write_locked = False
        if not inline:
            await super().commit()
        else:
            self._conn.commit()
        if self.checkpointer is not None:
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0:
                self.checkpointer.start()
        if inline:
            await asyncio.sleep(0)  # the loop's turn, as a trip would give it (see docstring)

    async def close(self) -> None:
        await super().close()
        if self.checkpointer is not None:
            await self.checkpointer.close()

    def idle(self) -> bool:
        """Connected, and nothing queued for or running on the connection's thread."""
        return self._queued == self._finished and self._connection is not None

    def runs_inline(self) -> bool:
        """Whether a statement may run on the calling (event loop's) thread now: this is a
        writer's connection, inside a write transaction whose BEGIN IMMEDIATE has returned, and
        the thread is idle."""
        return self.write_locked and self.idle() and self._conn.in_transaction

    def begin_inline(self, sql: str, parameters: Any) -> _Executed | None:
        """BEGIN IMMEDIATE on the calling thread if the write lock is free now; None (and no
        transaction) if another connection holds it."""
        connection = self._conn
        (timeout,) = connection.execute("PRAGMA busy_timeout").fetchone()
        connection.execute("PRAGMA busy_timeout=0")
        try:
            return _execute(connection, sql, parameters, many=False)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return None
        finally:
            connection.execute(f"PRAGMA busy_timeout={int(timeout)}")

    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection, to be used only by functions run on this connection's thread."""
        return self._conn

    def cursor(self) -> Result[aiosqlite.Cursor]:
        return Result(self._new_cursor())

    async def _new_cursor(self) -> aiosqlite.Cursor:
        return PrefetchingCursor(self)


def connect(
    database: str | bytes | Path, *, inline_writes: bool = False, **kwargs: Any
) -> PrefetchingConnection:
    """`aiosqlite.connect`, returning a `PrefetchingConnection` (its thread is a daemon, as
    SQLAlchemy makes aiosqlite's own). `inline_writes`: the writer's connection (see the module
    docstring); the sqlite3 connection is then also used from the event loop's thread, never
    at the same time as from its own."""
    kwargs.pop("iter_chunk_size", None)
    location = database.decode() if isinstance(database, bytes) else str(database)
    if inline_writes:
        kwargs["check_same_thread"] = False

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        if inline_writes:  # its commits never checkpoint: its Checkpointer does
            connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    def checkpoint_connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return connection

    connection = PrefetchingConnection(
        connector,
        64,
        inline_writes=inline_writes,
        checkpointer=Checkpointer(checkpoint_connector) if inline_writes else None,
    )
    connection._thread.daemon = True
    return connection
