"""A new card draws many clicks at once: they share one read of the request (not one each), and
every click still gets its own exact answer. The snapshots behind those answers stay exact: what
the writer keeps is the stored request, and a read overtaken by a change is not cached."""

from __future__ import annotations

import asyncio
import dataclasses

from bot.app import RUNTIME
from bot.domain.model import VoteKind
from bot.ports import Database, UnitOfWork
from bot.services.voting import VoteCommand, VoteResult, Voting
from handlers.action_ids import ActionId
from tests.e2e.harness import CountingDatabase, Env
from tests.e2e.slash import OWNER_2, OWNER_3


def _counting(env: Env) -> tuple[Voting, CountingDatabase]:
    """The vote use case, counting its reads (the background sweeps read on their own
    schedule and are not counted)."""
    counting = CountingDatabase(env.quorum.deps.database)
    assert env.quorum.app is not None
    voting = env.quorum.app[RUNTIME].voting
    voting._deps = dataclasses.replace(voting._deps, database=counting)
    return voting, counting


async def test_a_burst_of_first_clicks_shares_one_read(env: Env) -> None:
    request_id = await env.open()
    voting, counting = _counting(env)
    voting.forget_request(request_id)  # as if another Quorum process had opened it
    outsiders = [f"U0CROWD{i:02}" for i in range(30)]

    answers = await asyncio.gather(
        *(env.quorum.click(ActionId.approve, user, request_id) for user in outsiders),
        env.quorum.click(ActionId.approve, OWNER_2, request_id),
    )

    assert all(status == 200 for status, _ in answers)
    refused = await env.slack.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") in outsiders, count=len(outsiders)
    )
    assert {c.args["user"] for c in refused} == set(outsiders)
    assert all("not an approver" in str(c.args["text"]) for c in refused)
    _, data = await env.quorum.status(request_id)
    assert [v["user"] for v in data["votes"]] == [OWNER_2]
    # 31 clicks on a request not read before: one read of the delegations, and one read of
    # the request, or two when some clicks arrive just after the first began (they join the
    # next; later ones find it cached). One read per click would be 62.
    assert 2 <= counting.reads <= 3, counting.reads


async def test_clicks_on_a_card_this_process_opened_need_no_read_of_it(env: Env) -> None:
    request_id = await env.open()
    _, counting = _counting(env)

    status, _ = await env.quorum.click(ActionId.approve, "U0CROWD00", request_id)
    assert status == 200
    await env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == "U0CROWD00")
    status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert status == 200

    _, data = await env.quorum.status(request_id)
    assert [v["user"] for v in data["votes"]] == [OWNER_2]
    assert counting.reads == 1  # the delegations; the request came from its intake


async def test_a_vote_on_a_seeded_request_keeps_its_posted_card(env: Env) -> None:
    """The seeded snapshot predates the card; the card's position is written without a revision
    bump, so the writer takes it from the lock (status reports link the card with it)."""
    request_id = await env.open()
    await env.card_of(request_id)
    deps = env.quorum.deps
    for _ in range(200):  # the card's position is recorded right after it is posted
        async with deps.database.unit_of_work(read_only=True) as uow:
            stored = await uow.requests.get(request_id)
        if stored is not None and stored.message_ts is not None:
            break
        await asyncio.sleep(0.01)
    assert stored is not None
    assert stored.message_ts is not None
    assert env.quorum.app is not None
    voting = env.quorum.app[RUNTIME].voting

    status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert status == 200

    written = voting._snapshots[request_id].request  # what the writer keeps after its commit
    assert (written.channel, written.message_ts) == (stored.channel, stored.message_ts)
    assert written.card_revision == stored.card_revision


class HeldDatabase:
    """Our `Database` port, holding every read-only unit of work at its start until released."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        uow = self.inner.unit_of_work(read_only=read_only)
        return _HeldUnitOfWork(uow, self) if read_only else uow  # type: ignore[return-value]

    async def ping(self) -> None:
        await self.inner.ping()


class _HeldUnitOfWork:
    def __init__(self, uow: UnitOfWork, database: HeldDatabase) -> None:
        self._uow = uow
        self._database = database

    async def __aenter__(self) -> UnitOfWork:
        self._database.entered.set()
        await self._database.release.wait()
        return await self._uow.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._uow.__aexit__(*exc)  # type: ignore[arg-type]


async def test_a_read_begun_before_a_request_is_forgotten_is_not_cached(env: Env) -> None:
    """Break glass changes a request's rules and forgets its snapshot; a snapshot read that had
    already begun must not bring the old rules back into the cache."""
    request_id = await env.open()
    assert env.quorum.app is not None
    voting = env.quorum.app[RUNTIME].voting
    voting.forget_request(request_id)  # not cached: the next click reads it
    held = HeldDatabase(env.quorum.deps.database)
    voting._deps = dataclasses.replace(voting._deps, database=held)

    click = asyncio.ensure_future(env.quorum.click(ActionId.approve, "U0CROWD00", request_id))
    await asyncio.wait_for(held.entered.wait(), 10)  # the read has begun
    voting.forget_request(request_id)  # as break glass does, while the read is under way
    held.release.set()
    status, _ = await click

    assert status == 200  # the click still gets its answer from what was read
    assert request_id not in voting._snapshots


async def _turns_later(turns: int, voting: Voting, command: VoteCommand) -> VoteResult:
    for _ in range(turns):
        await asyncio.sleep(0)
    return await voting.cast(command)


async def test_votes_arriving_in_consecutive_turns_of_the_loop_commit_together(env: Env) -> None:
    requests = [await env.open(version=f"v1.{n}.0") for n in range(4)]
    voting, counting = _counting(env)
    first = await voting.cast(VoteCommand(requests[0], OWNER_2, VoteKind.APPROVE))
    assert first.vote is not None
    assert counting.writes == 1  # a lone vote: its own transaction

    # Three clicks, each a turn of the event loop after the previous one (as clicks read from
    # their sockets one after another are): the writer gathers them into one transaction.
    results = await asyncio.gather(
        *(
            _turns_later(turn, voting, VoteCommand(rid, OWNER_2, VoteKind.APPROVE))
            for turn, rid in enumerate(requests[1:])
        )
    )
    assert all(result.vote is not None for result in results)
    assert counting.writes == 2

    # A vote after a quiet moment: its own transaction again (gathering ended with the burst).
    await asyncio.sleep(0.05)
    late = await voting.cast(VoteCommand(requests[0], OWNER_3, VoteKind.APPROVE))
    assert late.vote is not None
    assert counting.writes == 3
    for rid in requests:
        _, data = await env.quorum.status(rid)
        assert OWNER_2 in [v["user"] for v in data["votes"]]
