"""The `messages` table (paced Slack messages) as `bot.ports.MessageQueue`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import MessageState, OutgoingMessage
from bot.domain.mrkdwn import stored
from storage.repositories._common import (
    _claim_leased,
    _insert_unless_duplicate,
    _plain_json,
)
from storage.tables import MessageRow


def _message_from_row(row: MessageRow) -> OutgoingMessage:
    return OutgoingMessage(
        id=row.id,
        dedupe_key=row.dedupe_key,
        channel=row.channel,
        text=stored(row.text),  # it was a Mrkdwn when it was queued
        created_at=row.created_at,
        not_before=row.not_before,
        request_id=row.request_id,
        dm=row.dm,
        thread_ts=row.thread_ts,
        blocks=tuple(dict(b) for b in row.blocks),
        state=MessageState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        sent_at=row.sent_at,
    )


class SqlMessageQueue:
    """`bot.ports.MessageQueue` on the `messages` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: OutgoingMessage) -> bool:
        """Queue `message`; False (and nothing written) when its dedupe_key was queued before."""
        exists = await self._session.scalar(
            select(MessageRow.id).where(MessageRow.dedupe_key == message.dedupe_key)
        )
        if exists is not None:
            return False
        return await _insert_unless_duplicate(
            self._session,
            MessageRow(
                id=message.id,
                dedupe_key=message.dedupe_key,
                request_id=message.request_id,
                channel=message.channel,
                dm=message.dm,
                thread_ts=message.thread_ts,
                text=message.text,
                blocks=[_plain_json(b) for b in message.blocks],
                state=message.state.value,
                attempts=message.attempts,
                not_before=message.not_before,
                lease_until=None,
                last_error=message.last_error,
                created_at=message.created_at,
                sent_at=message.sent_at,
            ),
        )

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[OutgoingMessage]:
        """Pending messages whose `not_before` has come, oldest first, leased until
        `lease_until` (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
        rows = await _claim_leased(
            self._session,
            MessageRow,
            MessageRow.not_before <= now,
            (MessageRow.not_before, MessageRow.created_at, MessageRow.id),
            pending=MessageState.PENDING.value,
            now=now,
            limit=limit,
            lease_until=lease_until,
        )
        return [_message_from_row(row) for row in rows]

    async def record_attempt(self, message: OutgoingMessage) -> None:
        """Persist state, attempts, not_before, last_error and sent_at; release the lease."""
        await self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message.id)
            .values(
                state=message.state.value,
                attempts=message.attempts,
                not_before=message.not_before,
                last_error=message.last_error,
                sent_at=message.sent_at,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )

    async def count_pending(self) -> int:
        count: int | None = await self._session.scalar(
            select(func.count())
            .select_from(MessageRow)
            .where(MessageRow.state == MessageState.PENDING.value)
        )
        return count or 0
