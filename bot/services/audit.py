"""What auditors read: a request's audit trail, and a check that the whole chain is intact."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.model import RecordedEvent
from bot.ports import Database
from bot.services.errors import NotFound


async def request_trail(database: Database, request_id: str) -> Sequence[RecordedEvent]:
    """Every audit entry of the request, in chain order (NotFound for an unknown request)."""
    async with database.unit_of_work(read_only=True) as uow:
        if await uow.requests.get(request_id) is None:
            raise NotFound(f"no request {request_id!r}")
        return await uow.events.list_recorded(request_id)


async def verify_trail(database: Database) -> int | None:
    """None when every entry links to its predecessor and its hash recomputes, else the
    sequence number of the first entry that was altered, removed or inserted."""
    async with database.unit_of_work(read_only=True) as uow:
        return await uow.events.verify_chain()
