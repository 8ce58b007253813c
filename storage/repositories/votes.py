"""The `votes` table as `bot.ports.VoteRepository` (one vote per voter and per clicker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import Vote, VoteKind
from bot.ports import CardRef, DuplicateVoteError
from storage.repositories._common import _is_unique_violation, _table
from storage.repositories._prepared import Prepared
from storage.tables import RequestRow, VoteRow

_VOTE_COLUMNS = ("request_id", "voter", "actor", "actor_key", "kind", "reason", "rule", "cast_at")


_VOTES = _table(VoteRow)
_REQUESTS = _table(RequestRow)
_VOTE_FIELDS = tuple(
    _VOTES.c[name] for name in ("request_id", "voter", "kind", "cast_at", "reason", "actor", "rule")
)
_KINDS = {kind.value: kind for kind in VoteKind}
_INSERT = Prepared(insert(_VOTES), _VOTE_COLUMNS)


def _vote_from_fields(row: Any) -> Vote:
    """A vote from a Core row of `_VOTE_FIELDS` (and maybe more)."""
    return Vote(
        request_id=row.request_id,
        voter=row.voter,
        kind=_KINDS[row.kind],
        cast_at=row.cast_at,
        reason=row.reason,
        actor=row.actor,
        rule=row.rule,
    )


class SqlVoteRepository:
    """`bot.ports.VoteRepository` on the `votes` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, vote: Vote) -> None:
        """Raises DuplicateVoteError when the voter or the person clicking already has a vote on
        the request; the unit of work stays usable (the insert runs in a savepoint)."""
        try:
            async with self._session.begin_nested():
                await self._insert([vote])
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateVoteError(
                    f"{vote.clicked_by} already has a vote on request {vote.request_id}"
                ) from exc
            raise

    async def add_many(self, votes: Sequence[Vote]) -> None:
        """Insert several votes in one statement (the group-commit path, whose caller holds the
        requests' locks and has already ruled out duplicates). Raises DuplicateVoteError if the
        unique constraints disagree; the unit of work is then unusable and must be rolled back."""
        if not votes:
            return
        try:
            await self._insert(votes)
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateVoteError("a vote in the batch duplicates a recorded one") from exc
            raise

    async def _insert(self, votes: Sequence[Vote]) -> None:
        await _INSERT.execute_many(
            self._session,
            [
                {
                    "request_id": vote.request_id,
                    "voter": vote.voter,
                    "actor": vote.actor,
                    "actor_key": vote.clicked_by,
                    "kind": vote.kind.value,
                    "reason": vote.reason,
                    "rule": vote.rule,
                    "cast_at": vote.cast_at,
                }
                for vote in votes
            ],
        )

    async def list_for(self, request_id: str) -> Sequence[Vote]:
        return (await self.list_for_many([request_id]))[request_id]

    async def list_for_many(self, request_ids: Sequence[str]) -> Mapping[str, Sequence[Vote]]:
        """The votes of several requests in one statement, each list in the order cast.

        A Core select (no ORM identity map): the group-commit writer reads every vote of every
        request in its batch, and building ORM instances for them was a third of its time."""
        found: dict[str, list[Vote]] = {request_id: [] for request_id in request_ids}
        if not found:
            return found
        result = await self._session.execute(
            select(*_VOTE_FIELDS).where(_VOTES.c.request_id.in_(list(found))).order_by(_VOTES.c.seq)
        )
        for row in result:
            found[row.request_id].append(_vote_from_fields(row))
        return found

    async def list_unannounced(self, limit: int) -> Sequence[tuple[Vote, CardRef]]:
        """Votes not yet posted as a thread reply, oldest first, with their request's card (a
        Core read: the sweep posts few of them per channel, so it loads no request)."""
        votes, requests = _VOTES, _REQUESTS
        result = await self._session.execute(
            select(*_VOTE_FIELDS, requests.c.channel, requests.c.message_ts)
            .join(requests, requests.c.id == votes.c.request_id)
            .where(votes.c.announced_at.is_(None))
            .order_by(votes.c.seq)
            .limit(limit)
        )
        return [
            (_vote_from_fields(row), CardRef(row.request_id, row.channel, row.message_ts))
            for row in result
        ]

    async def mark_announced(self, request_id: str, voter: str, at: datetime) -> None:
        """Record the thread reply for the vote; a vote already marked keeps its first time."""
        await self._session.execute(
            update(VoteRow)
            .where(
                VoteRow.request_id == request_id,
                VoteRow.voter == voter,
                VoteRow.announced_at.is_(None),
            )
            .values(announced_at=at)
            .execution_options(synchronize_session=False)
        )
