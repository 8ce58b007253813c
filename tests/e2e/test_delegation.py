"""Delegation end to end: a delegate votes on someone's behalf (shown on the card), nobody gains a
second vote, a requester cannot approve their own request as a delegate, undelegate ends it."""

from __future__ import annotations

from handlers.action_ids import ActionId
from tests.e2e.harness import Env
from tests.e2e.slash import OWNER_1, OWNER_2, OWNER_3, blocks_text, command

OUTSIDER = "U0OUT1"


async def _ephemeral_to(env: Env, user: str, count: int = 1) -> str:
    calls = await env.slack.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == user, count=count
    )
    return str(calls[-1].args["text"])


async def test_delegate_votes_on_behalf_and_counts_once(deputies_env: Env) -> None:
    env = deputies_env
    env.slack.add_user(OWNER_2, tz="America/New_York")
    reply = await command(
        env, "/approvals", OWNER_2, f"delegate <@{OUTSIDER}|out> until tomorrow 18:00 production"
    )
    assert reply.text.startswith(f"<@{OUTSIDER}> may now vote on your behalf in production until ")
    assert "EDT" in reply.text or "EST" in reply.text  # shown in the delegator's zone
    listed = await command(env, "/approvals", OWNER_2, "delegations")
    assert f"*You delegated to:*\n• <@{OUTSIDER}> in production" in listed.text
    theirs = await command(env, "/approvals", OUTSIDER, "delegations")
    assert f"*You may vote on behalf of:*\n• <@{OWNER_2}>" in theirs.text

    request_id = await env.open()
    await env.quorum.click(ActionId.approve, OUTSIDER, request_id)
    await env.slack.wait_for(
        "chat.update",
        lambda c: f"<@{OUTSIDER}> on behalf of <@{OWNER_2}>" in blocks_text(c.args),
    )
    # the delegator's own click would be a second vote for the same human
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert "on your behalf" in await _ephemeral_to(env, OWNER_2)
    # and the delegate has used their one vote on this request
    await env.quorum.click(ActionId.approve, OUTSIDER, request_id)
    assert "already" in await _ephemeral_to(env, OUTSIDER)
    _, data = await env.quorum.status(request_id)
    assert len(data["votes"]) == 1

    ended = await command(env, "/approvals", OWNER_2, "undelegate")
    assert ended.text == f"Ended your delegation to <@{OUTSIDER}>."
    second = await env.open(version="v2")
    await env.quorum.click(ActionId.approve, OUTSIDER, second)
    assert "not an approver" in await _ephemeral_to(env, OUTSIDER, count=2)
    async with env.quorum.deps.database.unit_of_work() as uow:
        assert await uow.delegations.list_active(env.quorum.deps.clock.now()) == []


async def test_requester_cannot_approve_as_a_delegate(env: Env) -> None:
    await command(env, "/approvals", OWNER_3, f"delegate <@{OWNER_1}> for 1d")
    request_id = await env.open()  # requested by OWNER_1 (octo-web)
    await env.quorum.click(ActionId.approve, OWNER_1, request_id)
    assert "requester" in (await _ephemeral_to(env, OWNER_1)).lower()
    _, data = await env.quorum.status(request_id)
    assert data["votes"] == []


async def test_a_delegate_who_voted_cannot_vote_again_for_their_delegator(env: Env) -> None:
    await command(env, "/approvals", OWNER_3, f"delegate <@{OWNER_2}> for 1d")
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert "already" in await _ephemeral_to(env, OWNER_2)
    _, data = await env.quorum.status(request_id)
    assert [v["user"] for v in data["votes"]] == [OWNER_2]


async def test_delegation_refusals(env: Env) -> None:
    self_reply = await command(env, "/approvals", OWNER_2, f"delegate <@{OWNER_2}> for 1d")
    assert self_reply.text == "You cannot delegate to yourself."
    none = await command(env, "/approvals", OWNER_2, "undelegate")
    assert none.text == "You have no active delegation."
    bad = await command(env, "/approvals", OWNER_2, f"delegate <@{OUTSIDER}> until tomorow 9:00")
    assert bad.text == (
        "could not read 'tomorow' as a time; try 'for 2h' or 'until 2026-12-01 18:00'"
    )
