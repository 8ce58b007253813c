"""Prepared statements store exactly what Core stores, raise what Core raises; the outbox's
queued deliveries are visible to its own reads and written at commit, or not at all."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.domain.model import DeliveryState
from bot.ports import RequestLock, SyncedCard
from storage.repositories._common import _plain_json, _table, canonical_json
from storage.repositories._prepared import Prepared
from storage.tables import EventRow, OutboxRow
from storage.uow import SqlDatabase
from tests.storage.builders import NOW, a_delivery, a_request

_COLUMNS = ("request_id", "kind", "actor", "data", "at", "prev_hash", "hash")
_EVENTS = _table(EventRow)
_PREPARED = Prepared(insert(_EVENTS), _COLUMNS)


def _row(n: int, at: datetime, *, key: str = "") -> dict[str, object]:
    return {
        "request_id": None,
        "kind": "test.row",
        "actor": "U0ACTOR" if n % 2 else None,
        "data": {"n": n, "text": "€ — ünïcode", "nested": {"list": [1, None, "x"]}},
        "at": at,
        "prev_hash": "0" * 64,
        "hash": f"{key}{n:062d}",
    }


async def test_prepared_rows_are_stored_as_core_stores_them(database: SqlDatabase) -> None:
    # Not UTC on purpose: both paths must convert the same way.
    at = datetime(2026, 3, 2, 11, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with database.unit_of_work() as uow:
        await uow.session.execute(insert(_EVENTS), [_row(1, at, key="c-"), _row(2, at, key="c-")])
        await _PREPARED.execute_many(uow.session, [_row(1, at, key="p-"), _row(2, at, key="p-")])
        await uow.commit()
    async with database.unit_of_work(read_only=True) as uow:
        # What the driver stored, untyped: the same values for the Core and the prepared rows.
        raw = await uow.session.execute(
            text("SELECT hash, kind, actor, at, data FROM events ORDER BY hash")
        )
        stored = {row[0][:2] + row[0][-1]: tuple(row[1:]) for row in raw}
        typed = (await uow.session.execute(select(EventRow.at, EventRow.data))).all()
    assert stored["c-1"] == stored["p-1"]
    assert stored["c-2"] == stored["p-2"]
    assert stored["p-1"][1] == "U0ACTOR"
    assert stored["p-2"][1] is None
    assert {row.at for row in typed} == {at.astimezone(UTC)}
    assert {row.at.utcoffset() for row in typed} == {timedelta(0)}
    assert [row.data["text"] for row in typed] == ["€ — ünïcode"] * 4
    assert {row.data["nested"]["list"][1] for row in typed} == {None}


async def test_prepared_statements_raise_integrity_errors(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(IntegrityError):  # the hash is unique
            await _PREPARED.execute_many(uow.session, [_row(1, NOW), _row(1, NOW)])


async def test_naive_times_are_refused_as_by_core(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(Exception, match="naive datetime"):
            await _PREPARED.execute_many(uow.session, [_row(1, NOW.replace(tzinfo=None))])


async def test_queued_deliveries_are_read_back_before_commit(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.outbox.add(a_delivery("dlv-1"))
        await uow.outbox.add(replace(a_delivery("dlv-2"), kind="progress"))
        assert await uow.outbox.count_for_request("req-1", "progress") == 1
        assert [d.id for d in await uow.outbox.get_for_request("req-1")] == ["dlv-1", "dlv-2"]
        await uow.outbox.add(a_delivery("dlv-3"))  # after a read: written at commit
        await uow.commit()
    async with database.unit_of_work(read_only=True) as uow:
        stored = await uow.outbox.get_for_request("req-1")
        count = await uow.session.scalar(select(text("count(*)")).select_from(OutboxRow))
    assert [d.id for d in stored] == ["dlv-1", "dlv-2", "dlv-3"]
    assert stored[0] == a_delivery("dlv-1")
    assert count == 3


async def test_queued_deliveries_are_dropped_without_commit(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.outbox.add(a_delivery("dlv-1"))
    async with database.unit_of_work(read_only=True) as uow:
        assert await uow.outbox.get_for_request("req-1") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"a": "x", "n": 1, "ok": True, "none": None},
            {"a": "x", "n": 1, "ok": True, "none": None},
        ),
        ({"votes": [{"user": "U1", "at": "2026-03-02T09:30:15Z"}]}, None),  # already plain
        ({"at": NOW}, {"at": "2026-03-02T09:30:15.123456+00:00"}),
        ({"nested": [{"at": NOW}]}, {"nested": [{"at": "2026-03-02T09:30:15.123456+00:00"}]}),
        ({"tuple": ("a", "b")}, {"tuple": ["a", "b"]}),
        ({"kind": DeliveryState.PENDING}, {"kind": "pending"}),
        ({"ratio": 0.5}, {"ratio": 0.5}),
    ],
)
def test_plain_json_is_what_json_gives_back(
    value: dict[str, object], expected: dict[str, object] | None
) -> None:
    plain = _plain_json(value)
    assert plain == (value if expected is None else expected)
    assert plain == json.loads(json.dumps(plain))
    assert {type(v) for v in plain.values()} == {
        type(v) for v in json.loads(canonical_json(value)).values()
    }
    # A copy: changing what was stored does not change the caller's value, nor the reverse.
    for item in plain.values():
        if isinstance(item, list | dict):
            assert all(item is not original for original in value.values())


def _lock(revision: int) -> RequestLock:
    return RequestLock(revision, channel="C0PAYMENTS", message_ts=None, card_revision=-1)


async def test_lock_many_returns_revisions_and_locks_the_rows(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        for n in range(5):
            await uow.requests.add(a_request(f"req-{n}"))
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.requests.touch_many(["req-3"])
        await uow.commit()
    async with database.unit_of_work() as uow:
        # Each list length is its own statement: several lengths, duplicates, missing ids.
        assert await uow.requests.lock_many(["req-1"]) == {"req-1": _lock(0)}
        assert await uow.requests.lock_many(["req-4", "req-3", "req-x", "req-3"]) == {
            "req-3": _lock(1),
            "req-4": _lock(0),
        }
        await uow.requests.mark_cards_synced(
            [SyncedCard("req-2", 0, "C0OTHER", "1700000000.000200")]
        )
        locked = await uow.requests.lock_many([f"req-{n}" for n in range(5)])
        assert {rid: lock.revision for rid, lock in locked.items()} == {
            f"req-{n}": int(n == 3) for n in range(5)
        }
        assert locked["req-2"] == RequestLock(0, "C0OTHER", "1700000000.000200", 0)
        if database.engine.dialect.name == "postgresql":
            # FOR UPDATE: another transaction cannot take the row while this one holds it.
            async with database.engine.connect() as other:
                with pytest.raises(DBAPIError, match="could not obtain lock"):
                    await other.execute(
                        text("SELECT id FROM requests WHERE id = 'req-2' FOR UPDATE NOWAIT")
                    )
