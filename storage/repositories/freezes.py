"""The `freezes` table as `bot.ports.FreezeRepository`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import Freeze
from storage.tables import FreezeRow


def _freeze_from_row(row: FreezeRow) -> Freeze:
    return Freeze(
        id=row.id,
        environments=tuple(row.environments),
        services=tuple(row.services),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
    )


class SqlFreezeRepository:
    """`bot.ports.FreezeRepository` on the `freezes` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, freeze: Freeze) -> None:
        self._session.add(
            FreezeRow(
                id=freeze.id,
                environments=list(freeze.environments),
                services=list(freeze.services),
                starts_at=freeze.starts_at,
                ends_at=freeze.ends_at,
                reason=freeze.reason,
                created_by=freeze.created_by,
                created_at=freeze.created_at,
                ended_at=freeze.ended_at,
                ended_by=freeze.ended_by,
            )
        )
        await self._session.flush()

    async def get(self, freeze_id: str) -> Freeze | None:
        row = await self._session.scalar(
            select(FreezeRow)
            .where(FreezeRow.id == freeze_id)
            .execution_options(populate_existing=True)
        )
        return None if row is None else _freeze_from_row(row)

    async def list_current(self, now: datetime) -> Sequence[Freeze]:
        """Freezes not ended early nor past their end at `now` (active or upcoming), by start."""
        rows = await self._session.scalars(
            select(FreezeRow)
            .where(
                (FreezeRow.ended_at.is_(None)) | (FreezeRow.ended_at > now),
                (FreezeRow.ends_at.is_(None)) | (FreezeRow.ends_at > now),
            )
            .order_by(FreezeRow.starts_at, FreezeRow.id)
            .execution_options(populate_existing=True)
        )
        return [_freeze_from_row(row) for row in rows]

    async def end(self, freeze_id: str, at: datetime, by: str) -> None:
        """End the freeze at `at`; a freeze that was already ended keeps its first end."""
        await self._session.execute(
            update(FreezeRow)
            .where(FreezeRow.id == freeze_id, FreezeRow.ended_at.is_(None))
            .values(ended_at=at, ended_by=by)
            .execution_options(synchronize_session=False)
        )
