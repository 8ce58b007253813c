"""Races between units of work, run for real with asyncio.gather on SQLite files and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from bot.domain.model import Event
from bot.ports import ConcurrencyError
from storage.tables import EventRow
from storage.uow import SqlDatabase
from tests.storage.builders import NOW, a_delivery, a_request


async def test_concurrent_claims_never_share_a_delivery(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        for i in range(20):
            await uow.outbox.add(a_delivery(f"d-{i:02}", due=timedelta(seconds=-i)))
        await uow.commit()

    async def worker() -> list[str]:
        async with database.unit_of_work() as uow:
            claimed = await uow.outbox.claim_due(NOW, limit=8, lease_until=NOW + timedelta(60))
            await uow.commit()
        return [d.id for d in claimed]

    results = await asyncio.gather(*(worker() for _ in range(4)))
    claimed = [d for result in results for d in result]
    assert len(claimed) == len(set(claimed)) == 20
    assert all(len(result) <= 8 for result in results)


async def test_concurrent_appends_keep_one_valid_chain(database: SqlDatabase) -> None:
    async def appender(n: int) -> None:
        async with database.unit_of_work() as uow:
            for k in range(3):
                await uow.events.append(
                    Event(kind="test.appended", at=NOW, request_id=f"req-{n}", data={"k": k})
                )
            await uow.commit()

    await asyncio.gather(*(appender(n) for n in range(10)))

    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.events.verify_chain() is None
        count = await uow.session.scalar(select(func.count()).select_from(EventRow))
        prev_hashes = (await uow.session.scalars(select(EventRow.prev_hash))).all()
    assert count == 30
    assert len(set(prev_hashes)) == 30  # no fork: every entry has its own predecessor


async def test_concurrent_read_modify_write_loses_no_update(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()

    async def escalate() -> None:
        async with database.unit_of_work() as uow:
            request = await uow.requests.get_for_update("req-1")
            assert request is not None
            request.escalation_level += 1
            await uow.requests.save(request)
            await uow.commit()

    # Writers are serialised (row lock / SQLite write lock), so none of them reads a stale row.
    await asyncio.gather(*(escalate() for _ in range(10)))

    async with database.unit_of_work() as uow:
        stored = await uow.requests.get("req-1")
    assert stored is not None
    assert (stored.escalation_level, stored.revision) == (10, 10)


async def test_concurrent_stale_saves_let_exactly_one_win(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()
    async with database.unit_of_work(read_only=True) as uow:
        snapshots = [await uow.requests.get("req-1") for _ in range(5)]

    async def save(level: int) -> bool:
        snapshot = snapshots[level]
        assert snapshot is not None
        snapshot.escalation_level = level
        async with database.unit_of_work() as uow:
            try:
                await uow.requests.save(snapshot)
            except ConcurrencyError:
                return False
            await uow.commit()
            return True

    outcomes = await asyncio.gather(*(save(level) for level in range(5)))
    assert outcomes.count(True) == 1


async def test_verify_chain_finds_the_first_tampered_entry(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        for k in range(5):
            await uow.events.append(
                Event(kind="test", at=NOW + timedelta(seconds=k), data={"k": k})
            )
        await uow.commit()
    async with database.unit_of_work() as uow:
        seqs = (await uow.session.scalars(select(EventRow.seq).order_by(EventRow.seq))).all()

    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(EventRow).where(EventRow.seq == seqs[2]).values(data={"k": 99})
        )
        assert await uow.events.verify_chain() == seqs[2]
        # Rewriting that entry's hash as well only moves the break to the next entry.
        await uow.session.execute(
            update(EventRow).where(EventRow.seq == seqs[2]).values(hash="f" * 64)
        )
        assert await uow.events.verify_chain() == seqs[2]

    async with database.unit_of_work() as uow:
        await uow.session.execute(delete(EventRow).where(EventRow.seq == seqs[1]))
        assert await uow.events.verify_chain() == seqs[2]  # its predecessor is gone

    async with database.unit_of_work() as uow:
        await uow.session.execute(
            update(EventRow).where(EventRow.seq == seqs[4]).values(at=NOW - timedelta(days=1))
        )
        assert await uow.events.verify_chain() == seqs[4]

    async with database.unit_of_work() as uow:  # all of the above was rolled back
        assert await uow.events.verify_chain() is None
