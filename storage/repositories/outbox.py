"""The `outbox` table of pipeline callbacks as `bot.ports.Outbox`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import Delivery, DeliveryState
from storage.repositories._common import _claim_leased, _plain_json, _table
from storage.repositories._prepared import Prepared
from storage.tables import OutboxRow

_COLUMNS = (
    "id",
    "request_id",
    "target",
    "kind",
    "payload",
    "webhook_id",
    "state",
    "attempts",
    "next_attempt_at",
    "lease_until",
    "last_error",
    "created_at",
    "delivered_at",
)
_OUTBOX = _table(OutboxRow)
_INSERT = Prepared(insert(_OUTBOX), _COLUMNS)
_RECORD_ATTEMPT = Prepared(
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
        last_error=bindparam("last_error"),
        delivered_at=bindparam("delivered_at"),
        lease_until=None,
    )
)


def _delivery_from_row(row: OutboxRow) -> Delivery:
    return Delivery(
        id=row.id,
        request_id=row.request_id,
        target=row.target,
        payload=dict(row.payload),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        kind=row.kind,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )


class SqlOutbox:
    """`bot.ports.Outbox` on the `outbox` table. The outgoing `webhook-id` is the delivery id."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._pending: list[dict[str, Any]] = []

    async def add(self, delivery: Delivery) -> None:
        """Queue a delivery; it is inserted (with the others added in this unit of work, in
        one statement) before the next read of the outbox, and at the latest at commit: a batch
        of votes deciding many requests costs one INSERT."""
        self._pending.append(
            {
                "id": delivery.id,
                "request_id": delivery.request_id,
                "target": delivery.target,
                "kind": delivery.kind,
                "payload": _plain_json(delivery.payload),
                "webhook_id": delivery.id,
                "state": delivery.state.value,
                "attempts": delivery.attempts,
                "next_attempt_at": delivery.next_attempt_at,
                "lease_until": None,
                "last_error": delivery.last_error,
                "created_at": delivery.created_at,
                "delivered_at": delivery.delivered_at,
            }
        )

    async def flush(self) -> None:
        """Insert the deliveries added since the last flush."""
        rows, self._pending = self._pending, []
        if rows:
            await _INSERT.execute_many(self._session, rows)

    async def get_for_request(self, request_id: str) -> Sequence[Delivery]:
        return (await self.get_for_requests([request_id]))[request_id]

    async def get_for_requests(
        self, request_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Delivery]]:
        """Each request's deliveries in the order queued, in one statement."""
        found: dict[str, list[Delivery]] = {request_id: [] for request_id in request_ids}
        if not found:
            return found
        await self.flush()
        rows = await self._session.scalars(
            select(OutboxRow)
            .where(OutboxRow.request_id.in_(sorted(found)))
            .order_by(OutboxRow.created_at, OutboxRow.id)
            .execution_options(populate_existing=True)
        )
        for row in rows:
            found[row.request_id].append(_delivery_from_row(row))
        return found

    async def count_for_request(self, request_id: str, kind: str) -> int:
        """How many deliveries of `kind` were ever queued for the request (progress budgets)."""
        await self.flush()
        count: int | None = await self._session.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.request_id == request_id, OutboxRow.kind == kind)
        )
        return count or 0

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[Delivery]:
        """Pending deliveries due at `now` and not leased (or whose lease ran out), oldest due
        first, leased until `lease_until`. PostgreSQL skips rows another worker has locked
        (FOR UPDATE SKIP LOCKED); SQLite writers are serialised by the database write lock."""
        await self.flush()
        rows = await _claim_leased(
            self._session,
            OutboxRow,
            OutboxRow.next_attempt_at <= now,
            (OutboxRow.next_attempt_at, OutboxRow.id),
            pending=DeliveryState.PENDING.value,
            now=now,
            limit=limit,
            lease_until=lease_until,
        )
        return [_delivery_from_row(row) for row in rows]

    async def record_attempts(self, deliveries: Sequence[Delivery]) -> None:
        """Persist the outcome of each attempt and release the leases (one executemany)."""
        await self.flush()
        if deliveries:
            await _RECORD_ATTEMPT.execute_many(
                self._session,
                [
                    {
                        "b_id": delivery.id,
                        "state": delivery.state.value,
                        "attempts": delivery.attempts,
                        "next_attempt_at": delivery.next_attempt_at,
                        "last_error": delivery.last_error,
                        "delivered_at": delivery.delivered_at,
                    }
                    for delivery in deliveries
                ],
            )

    async def count_pending(self) -> int:
        """Deliveries not yet delivered nor given up (what the pipelines are still owed)."""
        await self.flush()
        count: int | None = await self._session.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.state == DeliveryState.PENDING.value)
        )
        return count or 0

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery can next be claimed (its next attempt, or the end
        of its lease if a worker holds it); None when nothing is pending."""
        await self.flush()
        claimable_at = case(
            (OutboxRow.lease_until > OutboxRow.next_attempt_at, OutboxRow.lease_until),
            else_=OutboxRow.next_attempt_at,
        )
        earliest: datetime | None = await self._session.scalar(
            select(func.min(claimable_at)).where(OutboxRow.state == DeliveryState.PENDING.value)
        )
        return earliest
