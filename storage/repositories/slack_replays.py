"""The `slack_replays` table as `bot.ports.SlackReplayLog` (signed Slack requests already taken)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ports import SlackAnswer
from storage.repositories._common import _aware, _table
from storage.repositories._prepared import Prepared, PreparedLookup
from storage.tables import SlackReplayRow

_REPLAYS = _table(SlackReplayRow)
_TAKEN = PreparedLookup(
    select(_REPLAYS.c.key).where(_REPLAYS.c.key.in_(bindparam("keys", expanding=True))), "keys"
)
_TAKE = Prepared(
    sqlite.insert(_REPLAYS).on_conflict_do_nothing(index_elements=["key"]), ["key", "received_at"]
)
_ANSWER = Prepared(
    update(_REPLAYS)
    .where(_REPLAYS.c.key == bindparam("b_key"))
    .values(
        status=bindparam("b_status"), content_type=bindparam("b_type"), body=bindparam("b_body")
    )
)


class SqlSlackReplayLog:
    """`bot.ports.SlackReplayLog` on `slack_replays`, keyed by the request's digest."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim_many(self, keys: Sequence[str], at: datetime) -> set[str]:
        """Insert first, so that exactly one claimant of a key wins. SQLite: the writing unit
        of work holds the database's write lock from its first statement, so reading which
        keys are there and inserting the others is one step (as driver SQL: the hot path).
        PostgreSQL: one INSERT … ON CONFLICT DO NOTHING RETURNING key, where a key another
        transaction holds uncommitted waits for it."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        when = _aware(at)
        connection = await self._session.connection()
        if connection.dialect.name == "sqlite":
            there = {row[0] for row in await _TAKEN.all(self._session, unique)}
            new = [key for key in unique if key not in there]
            if new:
                rows = [{"key": key, "received_at": when} for key in new]
                await _TAKE.execute_many(self._session, rows)
            return set(new)
        statement = (
            postgresql.insert(_REPLAYS)
            .values([{"key": key, "received_at": when} for key in unique])
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(_REPLAYS.c.key)
        )
        return set((await connection.execute(statement)).scalars())

    async def answers(self, keys: Sequence[str]) -> Mapping[str, SlackAnswer | None]:
        if not keys:
            return {}
        row = SlackReplayRow
        found = await self._session.execute(
            select(row.key, row.status, row.content_type, row.body).where(row.key.in_(keys))
        )
        return {
            key: None if status is None else SlackAnswer(status, content_type, body or "")
            for key, status, content_type, body in found
        }

    async def record_answers(self, answers: Mapping[str, SlackAnswer]) -> None:
        if not answers:
            return
        rows = [
            {"b_key": key, "b_status": a.status, "b_type": a.content_type, "b_body": a.body}
            for key, a in answers.items()
        ]
        await _ANSWER.execute_many(self._session, rows)

    async def prune(self, before: datetime, limit: int) -> int:
        row = SlackReplayRow
        oldest = (
            select(row.key)
            .where(row.received_at < _aware(before))
            .order_by(row.received_at, row.key)
            .limit(limit)
        )
        result = await self._session.execute(
            delete(row).where(row.key.in_(oldest)).execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
