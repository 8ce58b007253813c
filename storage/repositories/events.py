"""The hash-chained, append-only `events` table as `bot.ports.EventLog`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import Event, RecordedEvent
from storage.repositories._common import _aware, _plain_json, _table, event_hash
from storage.repositories._prepared import Prepared
from storage.tables import EventRow

GENESIS_HASH: Final = "0" * 64
# Key of the transaction-level advisory lock that serialises appends to the event chain on
# PostgreSQL (any constant works as long as every appender uses the same one): "QUORUM" in ASCII.
EVENT_CHAIN_LOCK_KEY: Final = 0x51554F52554D
_INSERT = Prepared(
    insert(_table(EventRow)), ("request_id", "kind", "actor", "data", "at", "prev_hash", "hash")
)


def _event_from_row(row: EventRow) -> Event:
    return Event(
        kind=row.kind, at=row.at, request_id=row.request_id, actor=row.actor, data=dict(row.data)
    )


class SqlEventLog:
    """`bot.ports.EventLog`: the hash-chained, append-only `events` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._pending: list[tuple[Event, dict[str, Any], datetime]] = []
        # Set by the unit of work when it knows the chain's last hash (nothing was committed
        # since it was written): `flush` then need not read it. `tail`: the last hash written.
        self.known_tail: str | None = None
        self.tail: str | None = None

    async def append(self, event: Event) -> None:
        """Append one event to the chain (written at the latest when the unit of work commits)."""
        await self.append_many([event])

    async def append_many(self, events: Sequence[Event]) -> None:
        """Append events to the chain, in order (written at the latest at commit)."""
        for event in events:
            # Serialise now: a naive time is refused at the call, not at commit.
            data = _plain_json(event.data)
            self._pending.append((event, data, _aware(event.at).astimezone(UTC)))

    async def flush(self) -> None:
        """Write the appended events, reading the chain's tail once. The unit of work calls this
        before committing, so a batch of votes costs one tail read and one INSERT. Two units of
        work never read the same tail: PostgreSQL takes a transaction-level advisory lock first;
        SQLite writers hold the database write lock."""
        events, self._pending = self._pending, []
        if not events:
            return
        bind = self._session.get_bind()
        if bind.dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_CHAIN_LOCK_KEY}
            )
        await self._session.flush()  # rows added through the ORM must come first in the chain
        prev_hash = self.known_tail or await self._session.scalar(
            select(EventRow.hash).order_by(EventRow.seq.desc()).limit(1)
        )
        prev_hash = prev_hash or GENESIS_HASH
        rows: list[dict[str, Any]] = []
        for event, data, at in events:
            digest = event_hash(
                prev_hash,
                kind=event.kind,
                at=at,
                request_id=event.request_id,
                actor=event.actor,
                data=data,
            )
            rows.append(
                {
                    "request_id": event.request_id,
                    "kind": event.kind,
                    "actor": event.actor,
                    "data": data,
                    "at": at,
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
            )
            prev_hash = digest
        # executemany (no RETURNING): the driver inserts row after row, so `seq` follows the chain.
        await _INSERT.execute_many(self._session, rows)
        self.known_tail = self.tail = prev_hash

    async def list_for(self, request_id: str) -> Sequence[Event]:
        await self.flush()
        rows = await self._session.scalars(
            select(EventRow).where(EventRow.request_id == request_id).order_by(EventRow.seq)
        )
        return [_event_from_row(row) for row in rows]

    async def list_recorded(self, request_id: str) -> Sequence[RecordedEvent]:
        await self.flush()
        rows = await self._session.scalars(
            select(EventRow).where(EventRow.request_id == request_id).order_by(EventRow.seq)
        )
        return [
            RecordedEvent(
                seq=int(row.seq), event=_event_from_row(row), prev_hash=row.prev_hash, hash=row.hash
            )
            for row in rows
        ]

    async def verify_chain(self) -> int | None:
        """None when every entry links to its predecessor and its hash recomputes, else the
        `seq` of the first entry that does not."""
        await self.flush()
        rows = await self._session.stream(
            select(
                EventRow.seq,
                EventRow.kind,
                EventRow.at,
                EventRow.request_id,
                EventRow.actor,
                EventRow.data,
                EventRow.prev_hash,
                EventRow.hash,
            )
            .order_by(EventRow.seq)
            .execution_options(yield_per=500)
        )
        expected_prev = GENESIS_HASH
        async for row in rows:
            recomputed = event_hash(
                row.prev_hash,
                kind=row.kind,
                at=row.at,
                request_id=row.request_id,
                actor=row.actor,
                data=row.data,
            )
            if row.prev_hash != expected_prev or row.hash != recomputed:
                await rows.close()
                return int(row.seq)
            expected_prev = row.hash
        return None
