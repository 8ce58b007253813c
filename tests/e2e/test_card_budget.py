"""Pending cards share the workspace's chat.update budget (Slack allows about 50 updates a
minute); new cards and decided ones never wait for it."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from bot.app import RUNTIME
from bot.services.announcing import CARDS_PER_READ, sync_cards
from bot.services.pacing import TokenBuckets
from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, CountingDatabase, Env, body_for
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


async def test_the_budget_serves_the_longest_waiting_card_first(env: Env) -> None:
    pacing = env.quorum.deps.pacing
    pacing.cards.interval = 0.0  # only the workspace budget limits here
    pacing.updates = TokenBuckets(rate=0.0, burst=0.0)  # empty until the test grants one
    first, second, third = [await env.open(version=f"v{i}") for i in range(3)]
    for request_id in (first, second, third):  # posted in this order
        await env.card_of(request_id)
        status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
        assert status == 200

    async def grant_one_and_see() -> str:
        before = {r: _updates_of(env, r) for r in (first, second, third)}
        pacing.updates = TokenBuckets(rate=0.0, burst=1.0)  # one update, then none
        for _ in range(300):
            after = {r: _updates_of(env, r) for r in (first, second, third)}
            changed = [r for r in after if after[r] > before[r]]
            if changed:
                await asyncio.sleep(0.5)  # a few more sweeps: still one update only
                assert sum(_updates_of(env, r) for r in after) == sum(before.values()) + 1
                return changed[0]
            await asyncio.sleep(0.01)
        raise AssertionError("no card was updated")

    # All three wait; the one whose card was shown longest ago goes first.
    assert await grant_one_and_see() == first
    status, _ = await env.quorum.click(ActionId.approve, OWNER_3, first)  # waits again
    assert status == 200
    assert await grant_one_and_see() == second
    assert await grant_one_and_see() == third
    assert await grant_one_and_see() == first


async def test_a_sweep_reads_and_draws_many_cards_a_chunk_at_a_time(env: Env) -> None:
    # Background sweeps off: the test runs one by hand, over a database that counts its reads.
    await env.quorum.app[RUNTIME].scheduler.shutdown()
    requests = []
    for i in range(2 * CARDS_PER_READ + 5):
        status, data = await env.quorum.webhook(body_for(version=f"v{i}"))
        assert status == 202, data
        requests.append(str(data["id"]))
    assert not env.slack.calls_to("chat.postMessage")  # no sweep has drawn them
    counting = CountingDatabase(env.quorum.deps.database)

    drawn = await sync_cards(dataclasses.replace(env.quorum.deps, database=counting))

    assert drawn == len(requests)
    posted = env.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") is None)
    assert sorted(r for r in requests for c in posted if r in json.dumps(c.args["blocks"])) == (
        sorted(requests)
    )
    # One read picks the cards, then one per chunk of CARDS_PER_READ (not one for all 25):
    # clicks get the event loop between chunks.
    assert counting.reads == 1 + 3
