"""Vote replies under a burst of clicks: Slack takes about one message a second per channel, so
votes waiting together share a thread reply (a line each, in the order cast) instead of queueing
one reply per vote that would trail the burst by a minute."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.services.announcing import VOTES_PER_REPLY
from handlers.action_ids import ActionId
from tests.e2e.harness import Env, running_env
from tests.storage.dbs import DB_KINDS, DbKind, fresh_database_url

CROWD = [f"U0CROWD{i:02d}" for i in range(30)]
VOTERS = CROWD[:25]
POLICY = {
    "version": 1,
    "defaults": {"channel": "C0CROWD"},
    "teams": {"crowd": {"channel": "C0CROWD", "members": CROWD}},
    "services": {"svc": {"owner": "crowd"}},
    "environments": {
        "load": {
            "rules": [{"name": "crowd-review", "from": "owner", "approvals": len(CROWD)}],
            "self_approval": True,
        }
    },
}


@pytest.fixture(params=DB_KINDS)
async def crowd(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    kind: DbKind = request.param
    async with (
        fresh_database_url(kind, tmp_path) as url,
        running_env(url, policy=POLICY) as running,
    ):
        yield running


def _vote_lines(env: Env) -> list[list[str]]:
    """The vote lines of each thread reply, in the order the replies were posted."""
    replies = env.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    return [str(c.args.get("text")).splitlines() for c in replies]


async def test_a_burst_of_votes_shares_few_replies_in_the_order_cast(crowd: Env) -> None:
    status, data = await crowd.quorum.webhook(
        {"service": "svc", "environment": "load", "version": "v1", "requested_by": {}}
    )
    assert status == 202, data
    request_id = str(data["id"])
    await crowd.card_of(request_id)
    posted = crowd.slack.calls_to(
        "chat.postMessage", lambda c: c.ok and request_id in str(c.args.get("blocks"))
    )
    card_ts = posted[0].response["ts"]

    results = await asyncio.gather(
        *(crowd.quorum.click(ActionId.approve, user, request_id) for user in VOTERS)
    )
    assert [status for status, _ in results] == [200] * len(VOTERS)

    # One reply per vote would take ~20 s here (a burst of 5, then one a second).
    await crowd.slack.wait_for(
        "chat.postMessage",
        lambda c: c.args.get("thread_ts") is not None,
        count=1,
    )
    for _ in range(100):
        if sum(len(lines) for lines in _vote_lines(crowd)) >= len(VOTERS):
            break
        await asyncio.sleep(0.1)
    replies = _vote_lines(crowd)
    assert sum(len(lines) for lines in replies) == len(VOTERS), replies
    assert len(replies) < len(VOTERS)
    assert all(1 <= len(lines) <= VOTES_PER_REPLY for lines in replies)
    thread = crowd.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    assert {c.args["thread_ts"] for c in thread} == {card_ts}
    assert {c.args["channel"] for c in thread} == {"C0CROWD"}

    # Every vote once, in the order the votes were recorded.
    _, polled = await crowd.quorum.status(request_id)
    cast = [vote["user"] for vote in polled["votes"]]
    assert sorted(cast) == sorted(VOTERS)
    lines = [line for reply in replies for line in reply]
    assert lines == [f":white_check_mark: <@{user}> approved (crowd-review)" for user in cast]
