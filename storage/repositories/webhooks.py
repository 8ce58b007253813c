"""The `processed_webhooks` table as `bot.ports.WebhookLog` (delivery-id dedupe)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import ProcessedWebhook
from bot.ports import ConcurrencyError
from storage.repositories._common import _insert_unless_duplicate
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
