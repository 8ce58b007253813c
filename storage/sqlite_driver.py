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
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
from aiosqlite.context import Result

__all__ = ["PREFETCH_ROWS", "PrefetchingConnection", "PrefetchingCursor", "connect"]

_T = TypeVar("_T")

PREFETCH_ROWS = 256  # rows fetched together with the execute, in the same trip

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

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> PrefetchingCursor:
        await self._release()
        executed = await self._trip(
            _execute, self._connection.sqlite_connection(), sql, parameters, many=many
        )
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
            rows, done = await self._trip(_fetch_rest, self._open, size)
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
            await self._trip(cursor.close)

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

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
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
        # Idle and outside a transaction: ROLLBACK would do nothing. Anything still queued (a
        # BEGIN whose caller was cancelled, say) may open one, so then it is sent after it.
        idle = self._queued == self._finished and self._connection is not None
        if idle and not self.sqlite_connection().in_transaction:
            return
        await super().rollback()

    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection, to be used only by functions run on this connection's thread."""
        return self._conn

    def cursor(self) -> Result[aiosqlite.Cursor]:
        return Result(self._new_cursor())

    async def _new_cursor(self) -> aiosqlite.Cursor:
        return PrefetchingCursor(self)


def connect(database: str | bytes | Path, **kwargs: Any) -> PrefetchingConnection:
    """`aiosqlite.connect`, returning a `PrefetchingConnection` (its thread is a daemon, as
    SQLAlchemy makes aiosqlite's own)."""
    kwargs.pop("iter_chunk_size", None)
    location = database.decode() if isinstance(database, bytes) else str(database)

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return connection

    connection = PrefetchingConnection(connector, 64)
    connection._thread.daemon = True
    return connection
