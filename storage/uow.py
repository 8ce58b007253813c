"""The SQL unit of work (one AsyncSession, one transaction) and the `Database` behind it."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.ports import (
    Database,
    DelegationRepository,
    EventLog,
    FreezeRepository,
    MessageQueue,
    Outbox,
    RequestRepository,
    SlackReplayLog,
    UnitOfWork,
    VoteRepository,
    WebhookLog,
)
from storage.db import is_sqlite, read_only_engine
from storage.repositories import (
    SqlDelegationRepository,
    SqlEventLog,
    SqlFreezeRepository,
    SqlMessageQueue,
    SqlOutbox,
    SqlRequestRepository,
    SqlSlackReplayLog,
    SqlVoteRepository,
    SqlWebhookLog,
)


@dataclass(slots=True)
class _WriteTracking:
    """What lets a writing unit of work tell that nothing else was committed since an earlier
    one (SQLite only): SQLite's `PRAGMA data_version` changes when another connection commits,
    and `commits` counts the commits of this process's own writer connection."""

    commits: int = 0
    # The event chain's last hash as of a committed mark: a unit of work that sees that mark
    # appends to it without reading the tail again.
    tail: tuple[Hashable, str] | None = None


class SqlUnitOfWork:
    """`bot.ports.UnitOfWork`: `async with uow:` opens a session; leaving it without `commit()`
    rolls back. The transaction begins lazily with the first statement."""

    requests: RequestRepository
    votes: VoteRepository
    events: EventLog
    outbox: Outbox
    webhooks: WebhookLog
    freezes: FreezeRepository
    delegations: DelegationRepository
    messages: MessageQueue
    slack_replays: SlackReplayLog

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tracking: _WriteTracking | None = None,
    ) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._tracking = tracking  # None: this database cannot tell (read-only, PostgreSQL)
        self._mark: tuple[int, int] | None = None
        self._committed: Hashable | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside `async with`")
        return self._session

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._session is not None:
            raise RuntimeError("a unit of work cannot be entered twice")
        session = self._sessions()
        self._session = session
        self._mark = self._committed = None
        self.requests = SqlRequestRepository(session)
        self.votes = SqlVoteRepository(session)
        self._event_log = SqlEventLog(session)
        self.events = self._event_log
        self._outbox = SqlOutbox(session)
        self.outbox = self._outbox
        self.webhooks = SqlWebhookLog(session)
        self.freezes = SqlFreezeRepository(session)
        self.delegations = SqlDelegationRepository(session)
        self.messages = SqlMessageQueue(session)
        self.slack_replays = SqlSlackReplayLog(session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self.session, None
        try:
            # Anything not committed is discarded, whether we leave normally or by an exception.
            await session.rollback()
        finally:
            await session.close()

    async def commit(self) -> None:
        tracking, mark = self._tracking, self._mark
        tail = tracking.tail if tracking is not None else None
        if mark is not None and tail is not None and tail[0] == mark:
            self._event_log.known_tail = tail[1]  # nothing committed since it was written
        await self._outbox.flush()  # queued deliveries, as one statement
        await self._event_log.flush()  # appended events are written last, as one batch
        await self.session.commit()
        if tracking is not None and mark is not None:
            # Exactly one commit (this one) was counted since the mark: the writer connection
            # was ours all along, and other connections leave data_version alone until then.
            self._committed = (mark[0], mark[1] + 1)
            kept = tail[1] if tail is not None and tail[0] == mark else None
            last = self._event_log.tail or kept
            if last is not None:
                tracking.tail = (self._committed, last)

    async def write_mark(self) -> Hashable | None:
        if self._tracking is None:
            return None
        connection = await self.session.connection()
        data_version = (await connection.exec_driver_sql("PRAGMA data_version")).scalar()
        self._mark = (int(data_version or 0), self._tracking.commits)
        return self._mark

    @property
    def committed_mark(self) -> Hashable | None:
        return self._committed

    async def rollback(self) -> None:
        await self.session.rollback()


class SqlDatabase:
    """`bot.ports.Database` over an AsyncEngine built by `storage.db.create_engine`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # expire_on_commit=False: repositories hand out dataclasses, never live rows, and a
        # commit must not trigger lazy reloads (which would be implicit I/O under asyncio).
        self._writer_sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._reader_engine = read_only_engine(engine)
        self._reader_sessions = async_sessionmaker(self._reader_engine, expire_on_commit=False)
        self._tracking: _WriteTracking | None = None
        if is_sqlite(engine):
            tracking = self._tracking = _WriteTracking()

            @event.listens_for(engine.sync_engine, "commit")
            def _count_commit(_connection: Connection) -> None:
                tracking.commits += 1

    def unit_of_work(self, *, read_only: bool = False) -> SqlUnitOfWork:
        """A new unit of work. On SQLite a writing one takes the write lock at its first
        statement; `read_only=True` does not (and must not write)."""
        if read_only:
            return SqlUnitOfWork(self._reader_sessions)
        return SqlUnitOfWork(self._writer_sessions, self._tracking)

    async def ping(self) -> None:
        """Raise when the database cannot be reached."""
        async with self._reader_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection (on shutdown)."""
        if self._reader_engine is not self.engine:
            await self._reader_engine.dispose()
        await self.engine.dispose()


if TYPE_CHECKING:
    # mypy proves here that the classes implement the ports they stand in for.
    def _implements_unit_of_work(uow: SqlUnitOfWork) -> UnitOfWork:
        return uow

    def _implements_database(database: SqlDatabase) -> Database:
        return database
