"""A new card draws many clicks at once: they share one read of the request (not one each), and
every click still gets its own exact answer."""

from __future__ import annotations

import asyncio
import dataclasses

from bot.app import RUNTIME
from bot.ports import Database, UnitOfWork
from handlers.action_ids import ActionId
from tests.e2e.harness import Env
from tests.e2e.slash import OWNER_2


class CountingDatabase:
    """Our `Database` port, counting the read-only units of work it hands out."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.reads = 0

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        self.reads += int(read_only)
        return self.inner.unit_of_work(read_only=read_only)

    async def ping(self) -> None:
        await self.inner.ping()


async def test_a_burst_of_first_clicks_shares_one_read(env: Env) -> None:
    request_id = await env.open()
    counting = CountingDatabase(env.quorum.deps.database)
    # Only the vote use case counts (the background sweeps read on their own schedule).
    assert env.quorum.app is not None
    voting = env.quorum.app[RUNTIME].voting
    voting._deps = dataclasses.replace(voting._deps, database=counting)
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
    # 31 clicks on a request not read before: one read of it, or two when some clicks arrive
    # just after the first read began (they join the next one; later ones find it cached).
    # 31 clicks on a request not read before: one read of the delegations, and one read of
    # the request, or two when some clicks arrive just after the first began (they join the
    # next; later ones find it cached). One read per click would be 62.
    assert 2 <= counting.reads <= 3, counting.reads
