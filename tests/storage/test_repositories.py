"""Round trips through every repository of the SQL unit of work, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from bot.domain.model import (
    Delegation,
    DeliveryState,
    Event,
    Freeze,
    ProcessedWebhook,
    RequestState,
    Vote,
    VoteKind,
)
from bot.ports import CardDue, CardRef, ConcurrencyError, DuplicateVoteError, SyncedCard
from storage.repositories import SqlRequestRepository
from storage.tables import RequestRow
from storage.uow import SqlDatabase, SqlUnitOfWork
from tests.storage.builders import NOW, a_delivery, a_request, a_vote

CET = timezone(timedelta(hours=1))


def sql_requests(uow: SqlUnitOfWork) -> SqlRequestRepository:
    """The repository with its SQL-only extras (not in bot.ports yet)."""
    assert isinstance(uow.requests, SqlRequestRepository)
    return uow.requests


def assert_aware_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.utcoffset() == timedelta(0)
    assert value.tzinfo is UTC


async def test_request_round_trip(database: SqlDatabase) -> None:
    request = a_request(created_at=NOW.astimezone(CET))
    async with database.unit_of_work() as uow:
        await uow.requests.add(request)
        await uow.commit()

    async with database.unit_of_work() as uow:
        loaded = await uow.requests.get("req-1")
        missing = await uow.requests.get("nope")

    assert missing is None
    assert loaded == request  # every field, nested value objects included
    assert_aware_utc(loaded.created_at)
    assert loaded.created_at == NOW


async def test_save_bumps_revision_and_persists_changes(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()

    async with database.unit_of_work() as uow:
        request = await uow.requests.get_for_update("req-1")
        assert request is not None
        request.state = RequestState.APPROVED
        request.decided_at = NOW + timedelta(minutes=5)
        request.decision_reason = "quorum met"
        request.escalation_level = 2
        await uow.requests.save(request)
        await uow.commit()
    assert request.revision == 1

    async with database.unit_of_work(read_only=True) as uow:
        loaded = await uow.requests.get("req-1")
        open_requests = await uow.requests.list_open()
        open_count = await sql_requests(uow).count_open()
    assert loaded == request
    assert_aware_utc(loaded.decided_at)
    assert open_requests == []
    assert open_count == 0


async def test_stale_save_raises_concurrency_error(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.commit()
    async with database.unit_of_work() as uow:
        first = await uow.requests.get("req-1")
    stale = replace(first) if first else None
    assert first is not None
    assert stale is not None

    async with database.unit_of_work() as uow:
        first.escalation_level = 1
        await uow.requests.save(first)
        await uow.commit()

    async with database.unit_of_work() as uow:
        stale.state = RequestState.CANCELLED
        with pytest.raises(ConcurrencyError):
            await uow.requests.save(stale)
        assert stale.revision == 0  # a failed save leaves the object as it was

    async with database.unit_of_work() as uow:
        stored = await uow.requests.get("req-1")
    assert stored is not None
    assert (stored.revision, stored.state, stored.escalation_level) == (
        1,
        RequestState.PENDING,
        1,
    )


async def test_touch_bumps_revisions_only(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request("req-1"))
        await uow.requests.add(a_request("req-2"))
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.requests.touch_many(["req-2", "req-1", "req-2", "req-missing"])
        await uow.commit()
    async with database.unit_of_work() as uow:
        stored = await uow.requests.get_many(["req-1", "req-2"])
    # Each touched once however often named; nothing else changes (the card is now stale).
    assert {rid: r.revision for rid, r in stored.items()} == {"req-1": 1, "req-2": 1}
    assert stored["req-1"] == replace(a_request("req-1"), revision=1)


async def test_card_sync_never_goes_back_and_survives_stale_saves(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request("req-1"))
        await uow.requests.add(a_request("req-2", created_at=NOW + timedelta(seconds=1)))
        await uow.commit()

    async with database.unit_of_work() as uow:
        due = await uow.requests.list_cards_due(limit=10)
        assert due == [CardDue("req-1", False, True), CardDue("req-2", False, True)]
        read_before_sync = await uow.requests.get("req-1")
        await uow.requests.mark_cards_synced(
            [SyncedCard("req-1", 0, "C0OTHER", "1700000000.000100")]
        )
        await uow.requests.mark_cards_synced([SyncedCard("req-1", -1, "C0OLD", "1.1")])  # older
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert [c.request_id for c in await uow.requests.list_cards_due(limit=10)] == ["req-2"]
        assert read_before_sync is not None
        read_before_sync.escalation_level = 1
        await uow.requests.save(read_before_sync)  # read before the sync: must not undo it
        await uow.commit()
    assert read_before_sync.message_ts == "1700000000.000100"
    assert read_before_sync.card_revision == 0

    async with database.unit_of_work() as uow:
        stored = await uow.requests.get("req-1")
        due = await uow.requests.list_cards_due(limit=1)
    assert stored is not None
    assert (stored.channel, stored.message_ts, stored.card_revision, stored.revision) == (
        "C0PAYMENTS",  # the save wrote the channel it read back
        "1700000000.000100",
        0,
        1,
    )
    assert due == [CardDue("req-1", True, True)]  # revision 1 > card 0; limit respected


async def test_cards_due_skip_paced_cards_and_sync_in_one_write(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        for n in range(4):
            await uow.requests.add(a_request(f"req-{n}", created_at=NOW + timedelta(seconds=n)))
        await uow.commit()
    async with database.unit_of_work() as uow:  # every card posted, showing revision 0
        await uow.requests.mark_cards_synced(
            [SyncedCard(f"req-{n}", 0, "C0CARDS", f"17.{n}") for n in (3, 1, 0, 2)]
        )
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert await uow.requests.list_cards_due(limit=10) == []
        requests = await uow.requests.get_many([f"req-{n}" for n in range(4)])
        assert {r.message_ts for r in requests.values()} == {"17.0", "17.1", "17.2", "17.3"}
        decided = requests["req-0"]
        decided.state = RequestState.APPROVED
        for request in requests.values():
            await uow.requests.save(request)  # revision 1: every card out of date
        await uow.commit()
    async with database.unit_of_work() as uow:
        # A paced (open, posted) card in `skip` is left out; a decided one never is.
        due = await uow.requests.list_cards_due(limit=2, skip={"req-0", "req-1"})
        assert due == [CardDue("req-0", True, False), CardDue("req-2", True, True)]
        await uow.requests.mark_cards_synced(
            [SyncedCard("req-2", 1, "C0CARDS", "17.2"), SyncedCard("req-0", 1, "C0MOVED", "18.0")]
        )
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert [c.request_id for c in await uow.requests.list_cards_due(limit=10)] == [
            "req-1",
            "req-3",
        ]
        moved = await uow.requests.get("req-0")
    assert moved is not None
    assert (moved.channel, moved.message_ts, moved.card_revision) == ("C0MOVED", "18.0", 1)


async def test_list_due_by_sla_timer(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        for i, due in enumerate([timedelta(minutes=5), timedelta(minutes=-1), None]):
            await uow.requests.add(a_request(f"req-{i}"))
            if due is not None:
                # The domain does not carry the timers yet; set the column directly.
                await uow.session.execute(
                    update(RequestRow)
                    .where(RequestRow.id == f"req-{i}")
                    .values(next_due_at=NOW + due)
                )
        await uow.commit()

    async with database.unit_of_work() as uow:
        due_now = await sql_requests(uow).list_due(NOW, limit=10)
        due_later = await sql_requests(uow).list_due(NOW + timedelta(hours=1), limit=10)
        earliest = await sql_requests(uow).next_due_at()
    assert [r.id for r in due_now] == ["req-1"]
    assert [r.id for r in due_later] == ["req-1", "req-0"]
    assert earliest == NOW - timedelta(minutes=1)
    assert_aware_utc(earliest)


async def test_leaving_without_commit_rolls_back(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.events.append(Event(kind="request.opened", at=NOW, request_id="req-1"))

    async def fail_midway() -> None:
        async with database.unit_of_work() as uow:
            await uow.requests.add(a_request("req-2"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_midway()

    async with database.unit_of_work() as uow:
        assert await uow.requests.get("req-1") is None
        assert await uow.requests.get("req-2") is None
        assert await uow.events.list_for("req-1") == []


async def test_explicit_rollback_discards_and_uow_stays_usable(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request("req-1"))
        await uow.rollback()
        await uow.requests.add(a_request("req-2"))
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert await uow.requests.get("req-1") is None
        assert await uow.requests.get("req-2") is not None


async def test_naive_datetimes_are_refused(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(Exception, match="naive datetime"):
            await uow.requests.add(a_request(created_at=NOW.replace(tzinfo=None)))
    async with database.unit_of_work() as uow:
        with pytest.raises(ValueError, match="naive datetime"):
            await uow.events.append(Event(kind="x", at=NOW.replace(tzinfo=None)))
        with pytest.raises(ValueError, match="naive datetime"):
            await uow.events.append(Event(kind="x", at=NOW, data={"at": NOW.replace(tzinfo=None)}))


async def test_votes_round_trip_in_cast_order(database: SqlDatabase) -> None:
    votes = [
        a_vote("U0ALICE", rule="owner-review", cast_at=NOW.astimezone(CET)),
        a_vote("U0CAROL", actor="U0BOB", rule="owner-review", cast_at=NOW + timedelta(seconds=1)),
        a_vote("U0EVE", kind=VoteKind.REJECT, reason="not today", cast_at=NOW - timedelta(1)),
    ]
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        for vote in votes:
            await uow.votes.add(vote)
        await uow.commit()

    async with database.unit_of_work() as uow:
        loaded = await uow.votes.list_for("req-1")
        unannounced = await uow.votes.list_unannounced(limit=2)
        await uow.votes.mark_announced("req-1", "U0ALICE", NOW)
        await uow.commit()
    assert list(loaded) == votes  # insertion order, not cast_at order
    assert_aware_utc(loaded[0].cast_at)
    assert [vote for vote, _ in unannounced] == votes[:2]
    assert {card for _, card in unannounced} == {CardRef("req-1", "C0PAYMENTS", None)}

    async with database.unit_of_work() as uow:
        await uow.requests.mark_cards_synced([SyncedCard("req-1", 0, "C0PAYMENTS", "17.1")])
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert await uow.votes.list_unannounced(limit=10) == [
            (votes[1], CardRef("req-1", "C0PAYMENTS", "17.1")),
            (votes[2], CardRef("req-1", "C0PAYMENTS", "17.1")),
        ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(a_vote("U0ALICE"), a_vote("U0ALICE", kind=VoteKind.REJECT), id="same-voter"),
        pytest.param(a_vote("U0ALICE"), a_vote("U0ALICE", actor="U0BOB"), id="delegate-for-voter"),
        pytest.param(a_vote("U0BOB"), a_vote("U0CAROL", actor="U0BOB"), id="voter-then-delegate"),
        pytest.param(a_vote("U0CAROL", actor="U0BOB"), a_vote("U0BOB"), id="delegate-then-self"),
        pytest.param(
            a_vote("U0CAROL", actor="U0BOB"), a_vote("U0DAN", actor="U0BOB"), id="delegate-twice"
        ),
    ],
)
async def test_duplicate_vote_raises_and_uow_stays_usable(
    database: SqlDatabase, first: Vote, second: Vote
) -> None:
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.votes.add(first)
        with pytest.raises(DuplicateVoteError):
            await uow.votes.add(second)
        # The failed insert was confined to its savepoint: the transaction goes on.
        await uow.votes.add(a_vote("U0ZED"))
        await uow.events.append(Event(kind="vote.recorded", at=NOW, request_id="req-1"))
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert [v.voter for v in await uow.votes.list_for("req-1")] == [first.voter, "U0ZED"]


async def test_vote_for_unknown_request_is_not_a_duplicate(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - any driver error, checked below
            await uow.votes.add(a_vote("U0ALICE", request_id="missing"))
    assert not isinstance(raised.value, ConcurrencyError)


async def test_event_log_round_trip_and_chain(database: SqlDatabase) -> None:
    events = [
        Event(kind="request.opened", at=NOW, request_id="req-1", actor=None, data={"n": 1}),
        Event(
            kind="vote.recorded",
            at=NOW.astimezone(CET) + timedelta(seconds=2),
            request_id="req-1",
            actor="U0ALICE",
            data={"vote": "approve", "when": NOW, "nested": {"b": [1, 2.5, None], "a": "é"}},
        ),
        Event(kind="freeze.started", at=NOW, data={}),
    ]
    async with database.unit_of_work() as uow:
        for event in events:
            await uow.events.append(event)
        await uow.commit()

    async with database.unit_of_work() as uow:
        loaded = await uow.events.list_for("req-1")
        verdict = await uow.events.verify_chain()
    assert verdict is None
    assert [e.kind for e in loaded] == ["request.opened", "vote.recorded"]
    assert loaded[1].at == events[1].at
    assert_aware_utc(loaded[1].at)
    # Data is stored as plain JSON: datetimes come back as ISO-8601 UTC strings.
    assert loaded[1].data == {
        "vote": "approve",
        "when": NOW.isoformat(),
        "nested": {"b": [1, 2.5, None], "a": "é"},
    }


async def test_outbox_round_trip_claim_and_attempts(database: SqlDatabase) -> None:
    lease = NOW + timedelta(minutes=1)
    async with database.unit_of_work() as uow:
        await uow.requests.add(a_request())
        await uow.outbox.add(a_delivery("d-late", due=timedelta(minutes=10)))
        await uow.outbox.add(a_delivery("d-due", due=timedelta(seconds=-5)))
        await uow.outbox.add(a_delivery("d-now"))
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert await uow.outbox.next_due_at() == NOW - timedelta(seconds=5)
        claimed = await uow.outbox.claim_due(NOW, limit=10, lease_until=lease)
        await uow.commit()
    assert [d.id for d in claimed] == ["d-due", "d-now"]
    assert claimed[0] == a_delivery("d-due", due=timedelta(seconds=-5))

    async with database.unit_of_work() as uow:
        # Leased: nobody else gets them until the lease ends; the earliest claim is then.
        assert await uow.outbox.claim_due(NOW, limit=10, lease_until=lease) == []
        assert await uow.outbox.next_due_at() == lease
        retry = claimed[0]
        retry.attempts, retry.last_error = 1, "HTTP 503"
        retry.next_attempt_at = NOW + timedelta(seconds=30)
        done = claimed[1]
        done.attempts, done.state, done.delivered_at = 1, DeliveryState.DELIVERED, NOW
        await uow.outbox.record_attempts([retry, done])
        await uow.commit()

    async with database.unit_of_work() as uow:
        stored = {d.id: d for d in await uow.outbox.get_for_request("req-1")}
        # Recording an attempt releases the lease: due again at its next attempt time.
        reclaimed = await uow.outbox.claim_due(NOW + timedelta(seconds=30), 10, lease)
        await uow.commit()
    assert stored["d-due"] == retry
    assert stored["d-now"] == done
    assert_aware_utc(stored["d-now"].delivered_at)
    assert [d.id for d in reclaimed] == ["d-due"]

    async with database.unit_of_work() as uow:
        # A lease that ran out makes the delivery claimable again (the worker died).
        after_lease = await uow.outbox.claim_due(lease, 10, lease + timedelta(minutes=1))
    assert [d.id for d in after_lease] == ["d-due"]


async def test_outbox_deliveries_of_several_requests_in_one_read(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        for request_id in ("req-1", "req-2", "req-3"):
            await uow.requests.add(a_request(request_id))
        await uow.outbox.add(a_delivery("d-2a", "req-2"))
        await uow.outbox.add(a_delivery("d-1", "req-1"))
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.outbox.add(a_delivery("d-2b", "req-2"))  # queued, not yet inserted: read too
        found = await uow.outbox.get_for_requests(["req-2", "req-3", "req-1", "req-none"])
    assert {rid: [d.id for d in found[rid]] for rid in found} == {
        "req-2": ["d-2a", "d-2b"],
        "req-3": [],
        "req-1": ["d-1"],
        "req-none": [],
    }
    assert found["req-1"] == [a_delivery("d-1", "req-1")]


async def test_outbox_next_due_at_is_none_when_nothing_pending(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        assert await uow.outbox.next_due_at() is None
        assert await sql_requests(uow).next_due_at() is None


async def test_webhook_log_round_trip_and_duplicate(database: SqlDatabase) -> None:
    record = ProcessedWebhook(
        source="generic",
        webhook_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        body_sha256="b" * 64,
        request_id="req-1",
        received_at=NOW.astimezone(CET),
    )
    async with database.unit_of_work() as uow:
        await uow.webhooks.add(record)
        with pytest.raises(ConcurrencyError):
            await uow.webhooks.add(replace(record, body_sha256="c" * 64))
        await uow.webhooks.add(replace(record, source="github"))  # still usable; other source
        await uow.commit()

    async with database.unit_of_work() as uow:
        loaded = await uow.webhooks.get("generic", record.webhook_id)
        assert await uow.webhooks.get("gitlab", record.webhook_id) is None
    assert loaded == record
    assert loaded is not None
    assert_aware_utc(loaded.received_at)


async def test_webhook_log_prunes_the_oldest_ids_before_a_time(database: SqlDatabase) -> None:
    def received(source: str, webhook_id: str, age: timedelta) -> ProcessedWebhook:
        return ProcessedWebhook(source, webhook_id, "b" * 64, None, NOW - age)

    records = [
        received("generic", "msg-old-1", timedelta(days=9)),
        received("github", "msg-old-1", timedelta(days=8)),  # same id, another source
        received("gitlab", "msg-old-2", timedelta(days=8, hours=1)),
        received("generic", "msg-edge", timedelta(days=7)),  # exactly at the cut: kept
        received("generic", "msg-new", timedelta(hours=1)),
    ]
    async with database.unit_of_work() as uow:
        for record in records:
            await uow.webhooks.add(record)
        await uow.commit()

    cut = (NOW - timedelta(days=7)).astimezone(CET)  # any offset: compared as an instant
    async with database.unit_of_work() as uow:
        assert await uow.webhooks.prune(cut, limit=2) == 2  # the two oldest
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert await uow.webhooks.get("generic", "msg-old-1") is None
        assert await uow.webhooks.get("gitlab", "msg-old-2") is None
        assert await uow.webhooks.get("github", "msg-old-1") is not None
        assert await uow.webhooks.prune(cut, limit=2) == 1
        assert await uow.webhooks.prune(cut, limit=2) == 0
        await uow.commit()
    async with database.unit_of_work() as uow:
        left = [await uow.webhooks.get(r.source, r.webhook_id) for r in records]
    assert [r.webhook_id for r in left if r is not None] == ["msg-edge", "msg-new"]
    with pytest.raises(ValueError, match="naive datetime"):
        async with database.unit_of_work() as uow:
            await uow.webhooks.prune(NOW.replace(tzinfo=None), limit=1)


async def test_freezes_round_trip_current_and_end(database: SqlDatabase) -> None:
    active = Freeze(
        id="f-active",
        environments=("production",),
        services=(),
        starts_at=NOW - timedelta(hours=1),
        ends_at=None,
        reason="incident INC-7",
        created_by="U0SRE",
        created_at=NOW.astimezone(CET),
    )
    upcoming = replace(
        active, id="f-upcoming", starts_at=NOW + timedelta(days=1), ends_at=NOW + timedelta(days=2)
    )
    over = replace(active, id="f-over", ends_at=NOW - timedelta(minutes=1))
    async with database.unit_of_work() as uow:
        for freeze in (upcoming, active, over):
            await uow.freezes.add(freeze)
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert await uow.freezes.get("f-active") == active
        assert [f.id for f in await uow.freezes.list_current(NOW)] == ["f-active", "f-upcoming"]
        await uow.freezes.end("f-active", NOW, "U0LEAD")
        await uow.freezes.end("f-active", NOW + timedelta(hours=1), "U0LATE")  # keeps the first
        await uow.commit()

    async with database.unit_of_work() as uow:
        ended = await uow.freezes.get("f-active")
        assert [f.id for f in await uow.freezes.list_current(NOW)] == ["f-upcoming"]
        assert await uow.freezes.get("f-missing") is None
    assert ended is not None
    assert (ended.ended_at, ended.ended_by) == (NOW, "U0LEAD")
    assert_aware_utc(ended.ended_at)


async def test_delegations_round_trip_active_and_revoke(database: SqlDatabase) -> None:
    current = Delegation(
        id="d-current",
        delegator="U0ALICE",
        delegate="U0BOB",
        environments=("production", "staging"),
        starts_at=NOW - timedelta(days=1),
        ends_at=NOW + timedelta(days=1),
        created_at=NOW.astimezone(CET),
    )
    upcoming = replace(
        current, id="d-upcoming", starts_at=NOW + timedelta(days=2), ends_at=NOW + timedelta(days=3)
    )
    expired = replace(current, id="d-expired", ends_at=NOW)
    other = replace(current, id="d-other", delegator="U0CAROL", environments=())
    async with database.unit_of_work() as uow:
        for delegation in (current, upcoming, expired, other):
            await uow.delegations.add(delegation)
        await uow.commit()

    async with database.unit_of_work() as uow:
        active = await uow.delegations.list_active(NOW)
        mine = await uow.delegations.list_by_delegator("U0ALICE", NOW)
        await uow.delegations.revoke("d-current", NOW)
        await uow.commit()
    assert {d.id for d in active} == {"d-current", "d-other"}
    assert next(d for d in active if d.id == "d-current") == current
    assert [d.id for d in mine] == ["d-current", "d-upcoming"]

    async with database.unit_of_work() as uow:
        assert [d.id for d in await uow.delegations.list_active(NOW)] == ["d-other"]
        mine = await uow.delegations.list_by_delegator("U0ALICE", NOW)
    assert [d.id for d in mine] == ["d-upcoming"]
