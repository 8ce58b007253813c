"""The `processed_webhooks` table as `bot.ports.WebhookLog` (delivery-id dedupe)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import ProcessedWebhook
from bot.ports import ConcurrencyError
from storage.repositories._common import _aware, _insert_unless_duplicate
from storage.tables import ProcessedWebhookRow


class SqlWebhookLog:
    """`bot.ports.WebhookLog` on `processed_webhooks`, keyed by (source, webhook_id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, source: str, webhook_id: str) -> ProcessedWebhook | None:
        row = await self._session.get(ProcessedWebhookRow, (source, webhook_id))
        if row is None:
            return None
        return ProcessedWebhook(
            source=row.source,
            webhook_id=row.webhook_id,
            body_sha256=row.body_sha256,
            request_id=row.request_id,
            received_at=row.received_at,
        )

    async def add(self, record: ProcessedWebhook) -> None:
        """Raises ConcurrencyError when (source, webhook_id) was already recorded; the unit of
        work stays usable."""
        added = await _insert_unless_duplicate(
            self._session,
            ProcessedWebhookRow(
                source=record.source,
                webhook_id=record.webhook_id,
                body_sha256=record.body_sha256,
                request_id=record.request_id,
                received_at=record.received_at,
            ),
        )
        if not added:
            raise ConcurrencyError(
                f"webhook {record.source}/{record.webhook_id} was already processed"
            )

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` ids received before `before`, oldest first (a bounded
        transaction: the sweep calls again while there are more)."""
        row = ProcessedWebhookRow
        oldest = (
            select(row.source, row.webhook_id)
            .where(row.received_at < _aware(before))
            .order_by(row.received_at, row.source, row.webhook_id)
            .limit(limit)
        )
        result = await self._session.execute(
            delete(row)
            .where(tuple_(row.source, row.webhook_id).in_(oldest))
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
