"""Write marks: a writing unit of work can tell that nothing was committed since an earlier one
(SQLite), so what that one read still holds; and the event chain stays one chain when its tail
is taken from the mark instead of read."""

from __future__ import annotations

from pathlib import Path

from bot.domain.model import Event
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.storage.builders import NOW, a_request


def _event(n: int) -> Event:
    return Event(kind="test.appended", at=NOW, request_id="req-1", data={"n": n})


async def _append(database: SqlDatabase, n: int) -> tuple[object, object]:
    """One writing unit of work that takes a mark and appends an event: (mark, committed)."""
    async with database.unit_of_work() as uow:
        mark = await uow.write_mark()
        await uow.events.append(_event(n))
        await uow.commit()
        return mark, uow.committed_mark


async def test_marks_on_postgresql_say_nothing(database: SqlDatabase) -> None:
    if database.engine.dialect.name != "postgresql":
        return  # the SQLite behaviour is the subject of the tests below
    mark, committed = await _append(database, 1)
    assert mark is None
    assert committed is None


async def _two_processes(tmp_path: Path) -> tuple[SqlDatabase, SqlDatabase]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'quorum.db'}"
    await upgrade(url)
    return SqlDatabase(create_engine(url)), SqlDatabase(create_engine(url))


async def test_a_mark_is_kept_until_someone_else_commits(tmp_path: Path) -> None:
    ours, theirs = await _two_processes(tmp_path)
    try:
        _, first = await _append(ours, 1)
        assert first is not None
        # Nothing in between: the next unit of work sees exactly that mark.
        mark, committed = await _append(ours, 2)
        assert mark == first
        assert committed != first
        # Another unit of work of this process commits: the mark moves.
        async with ours.unit_of_work() as uow:
            await uow.requests.add(a_request())
            await uow.commit()
        moved, committed_after = await _append(ours, 3)
        assert moved != committed
        # Another process (its own connection) commits: the mark moves too.
        async with theirs.unit_of_work() as uow:
            await uow.requests.add(a_request("req-2"))
            await uow.commit()
        moved_again, _ = await _append(ours, 4)
        assert moved_again != committed_after
        # A unit of work that is not committed leaves the mark where it was.
        _, committed = await _append(ours, 5)
        async with ours.unit_of_work() as uow:
            await uow.write_mark()
            await uow.requests.add(a_request("req-3"))  # rolled back on leaving
        kept, _ = await _append(ours, 6)
        assert kept == committed
    finally:
        await ours.dispose()
        await theirs.dispose()


async def test_the_chain_stays_whole_when_processes_interleave(tmp_path: Path) -> None:
    ours, theirs = await _two_processes(tmp_path)
    try:
        for n in range(12):
            # Ours appends from its remembered tail while nothing else wrote, and must notice
            # when the other process appended in between.
            await _append(ours, n)
            if n % 3 == 0:
                await _append(theirs, 100 + n)
        async with ours.unit_of_work(read_only=True) as uow:
            assert await uow.events.verify_chain() is None
            assert len(await uow.events.list_for("req-1")) == 16
    finally:
        await ours.dispose()
        await theirs.dispose()


async def test_read_only_units_of_work_take_no_mark(tmp_path: Path) -> None:
    ours, theirs = await _two_processes(tmp_path)
    try:
        async with ours.unit_of_work(read_only=True) as uow:
            assert await uow.write_mark() is None
    finally:
        await ours.dispose()
        await theirs.dispose()
