"""Pending cards share the workspace's chat.update budget (Slack allows about 50 updates a
minute); new cards and decided ones never wait for it."""

from __future__ import annotations

import asyncio
import json

from bot.services.pacing import TokenBuckets
from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, Env
from tests.e2e.slash import OWNER_2, OWNER_3


def _updates_of(env: Env, request_id: str) -> int:
    return sum(
        1
        for call in env.slack.calls
        if call.method == "chat.update" and request_id in json.dumps(call.args.get("blocks", ""))
    )


async def test_pending_updates_wait_for_the_budget_decisions_do_not(env: Env) -> None:
    env.quorum.deps.pacing.updates = TokenBuckets(rate=0.0, burst=1.0)  # one update, no refill
    requests = [await env.open(version=f"v{i}") for i in range(3)]  # new cards: not limited
    for request_id in requests:
        status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
        assert status == 200
    await asyncio.sleep(1.0)  # several sweeps
    assert sorted(_updates_of(env, r) for r in requests) == [0, 0, 1]

    # Deciding one of the waiting cards updates it at once, budget or not.
    waiting = next(r for r in requests if _updates_of(env, r) == 0)
    await env.quorum.click(ActionId.approve, OWNER_3, waiting)
    await env.quorum.click(ActionId.approve, SRE[0], waiting)
    update = await env.slack.wait_for(
        "chat.update",
        lambda c: waiting in json.dumps(c.args.get("blocks", "")) and "Approved" in str(c.args),
    )
    assert update
