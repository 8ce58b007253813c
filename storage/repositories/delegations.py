"""The `delegations` table as `bot.ports.DelegationRepository`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import Delegation
from storage.tables import DelegationRow


def _delegation_from_row(row: DelegationRow) -> Delegation:
    return Delegation(
        id=row.id,
        delegator=row.delegator,
        delegate=row.delegate,
        environments=tuple(row.environments),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _not_revoked(now: datetime) -> ColumnElement[bool]:
    return (DelegationRow.revoked_at.is_(None)) | (DelegationRow.revoked_at > now)


class SqlDelegationRepository:
    """`bot.ports.DelegationRepository` on the `delegations` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, delegation: Delegation) -> None:
        self._session.add(
            DelegationRow(
                id=delegation.id,
                delegator=delegation.delegator,
                delegate=delegation.delegate,
                environments=list(delegation.environments),
                starts_at=delegation.starts_at,
                ends_at=delegation.ends_at,
                created_at=delegation.created_at,
                revoked_at=delegation.revoked_at,
            )
        )
        await self._session.flush()

    async def _list(self, *conditions: ColumnElement[bool]) -> Sequence[Delegation]:
        rows = await self._session.scalars(
            select(DelegationRow)
            .where(*conditions)
            .order_by(DelegationRow.starts_at, DelegationRow.id)
            .execution_options(populate_existing=True)
        )
        return [_delegation_from_row(row) for row in rows]

    async def list_active(self, now: datetime) -> Sequence[Delegation]:
        """Delegations in force at `now`: started, not yet ended, not revoked."""
        return await self._list(
            DelegationRow.starts_at <= now, DelegationRow.ends_at > now, _not_revoked(now)
        )

    async def list_current(self, now: datetime) -> Sequence[Delegation]:
        """Delegations not ended nor revoked at `now` (in force, or starting later), by start."""
        return await self._list(DelegationRow.ends_at > now, _not_revoked(now))

    async def list_by_delegator(self, delegator: str, now: datetime) -> Sequence[Delegation]:
        """The delegator's delegations that are active or upcoming at `now`, by start."""
        return await self._list(
            DelegationRow.delegator == delegator, DelegationRow.ends_at > now, _not_revoked(now)
        )

    async def revoke(self, delegation_id: str, at: datetime) -> None:
        """Revoke at `at`; an already revoked delegation keeps its first revocation time."""
        await self._session.execute(
            update(DelegationRow)
            .where(DelegationRow.id == delegation_id, DelegationRow.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session=False)
        )
