"""A restart resumes every delivery and announcement: nothing committed is lost."""

from __future__ import annotations

from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, Env


async def test_restart_with_an_undelivered_callback(env: Env) -> None:
    env.pipeline.statuses = [503]
    request_id = await env.open(environment="staging", change_ticket=None)
    await env.quorum.click(ActionId.approve, "U0WEB2", request_id)
    first = await env.pipeline.wait_for(1)
    assert first[0].body["decision"] == "approved"
    await env.quorum.stop()  # the callback failed once and is still pending

    env.pipeline.statuses = []
    await env.restart()
    received = await env.pipeline.wait_for(2)
    assert {c.headers["webhook-id"] for c in received} == {first[0].headers["webhook-id"]}
    _, data = await env.quorum.status(request_id)
    assert data["state"] == "approved"


async def test_votes_survive_a_restart_and_the_loop_completes(env: Env) -> None:
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, "U0WEB2", request_id)
    await env.quorum.click(ActionId.approve, "U0WEB3", request_id)
    await env.restart()
    await env.quorum.click(ActionId.approve, SRE[0], request_id)
    callbacks = await env.pipeline.wait_for(1)
    assert [v["user"] for v in callbacks[0].body["votes"]] == ["U0WEB2", "U0WEB3", SRE[0]]
