"""The approval loop end to end over real HTTP: webhook → card → votes → decision → callback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from handlers.action_ids import ActionId
from tests.e2e.harness import API_TOKEN, SRE, Env, body_for

OWNER_1, OWNER_2, OWNER_3 = "U0WEB1", "U0WEB2", "U0WEB3"  # U0WEB1 is the requester (octo-web)


def _texts(blocks: Any) -> str:
    return json.dumps(blocks, ensure_ascii=False)


async def _ephemeral_to(env: Env, user: str) -> str:
    calls = await env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == user)
    return str(calls[-1].args["text"])


async def test_happy_path_to_callback(env: Env) -> None:
    request_id = await env.open()
    card = await env.card_of(request_id)
    assert card["channel"] == "C0WEB"
    blocks = _texts(card["blocks"])
    assert "storefront → production v1.4.2" in blocks
    assert "owner-review 0/2 · sre-signoff 0/1" in blocks
    assert '{\\"v\\":1,\\"request\\":\\"' + request_id in blocks

    for user in (OWNER_2, OWNER_3, SRE[0]):
        status, _ = await env.quorum.click(ActionId.approve, user, request_id)
        assert status == 200

    callbacks = await env.pipeline.wait_for(1)
    assert len(callbacks) == 1
    body = callbacks[0].body
    assert body["type"] == "approval.decided"
    assert body["request_id"] == request_id
    assert body["decision"] == "approved"
    assert [v["user"] for v in body["votes"]] == [OWNER_2, OWNER_3, SRE[0]]
    assert callbacks[0].headers["webhook-id"].startswith("dlv_")

    # the card is updated in place to the decided state, and each vote has a line in a thread
    # reply (votes waiting together share one reply)
    await env.slack.wait_for(
        "chat.update", lambda c: "Approved" in _texts(c.args.get("blocks")), timeout=10
    )
    voters = (OWNER_2, OWNER_3, SRE[0])
    for user in voters:
        await env.slack.wait_for(
            "chat.postMessage",
            lambda c, user=user: (
                c.args.get("thread_ts") is not None
                and f"<@{user}> approved" in str(c.args.get("text"))
            ),
        )
    thread = env.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    lines = [line for c in thread for line in str(c.args.get("text")).splitlines()]
    for user in voters:
        assert sum(f"<@{user}> approved" in line for line in lines) == 1, lines
    status, data = await env.quorum.status(request_id)
    assert status == 200
    assert data["state"] == "approved"
    assert [r["met"] for r in data["rules"]] == [True, True]


async def test_self_approval_is_refused_with_an_ephemeral_reason(env: Env) -> None:
    request_id = await env.open()
    status, _ = await env.quorum.click(ActionId.approve, OWNER_1, request_id)
    assert status == 200
    text = await _ephemeral_to(env, OWNER_1)
    assert "You are the requester" in text
    _, data = await env.quorum.status(request_id)
    assert data["votes"] == []


async def test_non_approver_is_refused(env: Env) -> None:
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, "U0STRANGER", request_id)
    text = await _ephemeral_to(env, "U0STRANGER")
    assert "not an approver" in text
    _, data = await env.quorum.status(request_id)
    assert data["votes"] == []


async def test_duplicate_click_records_one_vote(env: Env) -> None:
    request_id = await env.open()
    first, second = await asyncio.gather(
        env.quorum.click(ActionId.approve, OWNER_2, request_id),
        env.quorum.click(ActionId.approve, OWNER_2, request_id),
    )
    assert first[0] == second[0] == 200
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    text = await _ephemeral_to(env, OWNER_2)
    assert "already approved" in text
    _, data = await env.quorum.status(request_id)
    assert [v["user"] for v in data["votes"]] == [OWNER_2]


async def test_rejection_needs_a_reason_and_decides(env: Env) -> None:
    request_id = await env.open()
    status, _ = await env.quorum.click(ActionId.reject, SRE[1], request_id)
    assert status == 200
    views = await env.slack.wait_for("views.open")
    assert views[0].args["trigger_id"] == f"trigger-{SRE[1]}-{request_id}"

    status, text = await env.quorum.submit_reject(SRE[1], request_id, "   ")
    assert status == 200
    assert json.loads(text)["response_action"] == "errors"

    status, text = await env.quorum.submit_reject(SRE[1], request_id, "DB migration not reviewed")
    assert status == 200
    assert text == ""
    callbacks = await env.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "rejected"
    assert "DB migration not reviewed" in callbacks[0].body["reason"]
    # later clicks are refused: the request is decided
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert "already rejected" in (await _ephemeral_to(env, OWNER_2)).lower()


async def test_replayed_webhook_gets_the_same_id_and_no_second_card(env: Env) -> None:
    body = body_for(callback_url=env.pipeline.url)
    first = await env.quorum.webhook(body, webhook_id="msg_replay_1")
    second = await env.quorum.webhook(body, webhook_id="msg_replay_1")
    assert first[0] == 202
    assert second[0] == 200
    assert first[1]["id"] == second[1]["id"]
    conflict = await env.quorum.webhook({**body, "version": "v9"}, webhook_id="msg_replay_1")
    assert conflict[0] == 409
    await env.card_of(first[1]["id"])
    await env.quorum.click(ActionId.approve, "U0NOBODY", first[1]["id"])  # a later, known call
    await env.slack.wait_for("chat.postEphemeral")
    cards = env.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") is None)
    assert len(cards) == 1


async def test_callback_endpoint_down_then_up(env: Env) -> None:
    env.pipeline.statuses = [503, 503]
    request_id = await env.open(environment="staging", change_ticket=None)
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    callbacks = await env.pipeline.wait_for(3)
    ids = {c.headers["webhook-id"] for c in callbacks}
    assert len(ids) == 1  # the same webhook-id on every retry
    await env.slack.wait_for(
        "chat.update", lambda c: "pipeline notified" in _texts(c.args.get("blocks"))
    )
    _, data = await env.quorum.status(request_id)
    assert data["callback"]["state"] == "delivered"
    assert data["callback"]["attempts"] == 3


async def test_a_pipeline_that_polls_is_not_said_to_be_notified(env: Env) -> None:
    # No callback_url: the pipeline reads the decision from the status API instead.
    status, data = await env.quorum.webhook(
        body_for(environment="staging", change_ticket=None, version="v9.9.9")
    )
    assert status == 202, data
    request_id = str(data["id"])
    await env.card_of(request_id)
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)

    updates = await env.slack.wait_for(
        "chat.update", lambda c: "the pipeline polls" in _texts(c.args.get("blocks"))
    )
    final = _texts(updates[-1].args.get("blocks"))
    assert "Approved" in final
    assert "pipeline notified" not in final
    assert "Callback: none, the pipeline polls for the decision" in final
    _, polled = await env.quorum.status(request_id)
    assert polled["state"] == "approved"
    assert polled["callback"] is None  # nothing was queued, so nothing claims to be delivered
    assert env.pipeline.received == []
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert list(await uow.outbox.get_for_request(request_id)) == []
    # What an auditor reads: the decision, then that no callback was asked for.
    assert env.quorum.http is not None
    url = f"{env.quorum.url}/api/v1/requests/{request_id}/events"
    async with env.quorum.http.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
        kinds = [event["kind"] for event in (await resp.json())["events"]]
    assert kinds[-2:] == ["request.approved", "callback.not_requested"]
    assert [kind for kind in kinds if kind.startswith("callback.")] == ["callback.not_requested"]


async def test_fifty_simultaneous_clicks_make_one_decision(env: Env) -> None:
    request_id = await env.open()
    users = [OWNER_2, OWNER_3, *SRE] + [f"U0RAND{i:02d}" for i in range(20)]
    clicks = [
        env.quorum.click(ActionId.approve, users[i % len(users)], request_id) for i in range(50)
    ]
    results = await asyncio.gather(*clicks)
    assert all(status == 200 for status, _ in results)
    await env.pipeline.wait_for(1)
    await env.slack.wait_for(
        "chat.update", lambda c: "pipeline notified" in _texts(c.args.get("blocks"))
    )
    callbacks = env.pipeline.received
    _, data = await env.quorum.status(request_id)
    assert data["state"] == "approved"
    voters = [v["user"] for v in data["votes"]]
    assert len(voters) == len(set(voters))
    assert len(callbacks) == 1
    assert data["callback"]["state"] == "delivered"
