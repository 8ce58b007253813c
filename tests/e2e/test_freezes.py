"""Freezes end to end: /freeze by a release manager (and a refusal for anyone else), a webhook
during a freeze (frozen card, vote refused), and /unfreeze releasing the request."""

from __future__ import annotations

from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, Env
from tests.e2e.slash import (
    OWNER_2,
    OWNER_3,
    RM_1,
    blocks_text,
    buttons,
    command,
    ephemeral_to,
    queued,
    stored,
)


async def test_only_release_managers_may_freeze(env: Env) -> None:
    reply = await command(env, "/freeze", OWNER_2, "production for 2h quarter-end close")
    assert reply.status == 200
    assert not reply.public
    assert (
        reply.text
        == "Only members of release-managers (the release managers) may freeze deployments."
    )
    listed = await command(env, "/freeze", OWNER_2, "list")
    assert listed.text == "No freezes are active or scheduled."


async def test_freeze_updates_open_cards_and_refuses_votes(env: Env) -> None:
    request_id = await env.open()
    reply = await command(env, "/freeze", RM_1, "production for 2h quarter-end close")
    assert reply.public, reply.text
    assert reply.text.startswith(f":snowflake: <@{RM_1}> froze deployments in production until ")
    assert "quarter-end close (`frz_" in reply.text

    # the open card re-renders with the freeze note and without its Approve button
    update = await env.slack.wait_for(
        "chat.update", lambda c: "Frozen until" in blocks_text(c.args)
    )
    card = update[-1].args
    assert f"by <@{RM_1}>: quarter-end close" in blocks_text(card)
    assert buttons(card) == ["Reject", "Break glass"]
    assert (await stored(env, request_id)).frozen_until is not None

    # announced through the durable queue in the owning team's channel and the default channel
    messages = await queued(env.db_url)
    assert {m["channel"] for m in messages} == {"C0WEB", "C0DEPLOYS"}
    assert all("*Deployment freeze* in production" in m["text"] for m in messages)

    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    text = await ephemeral_to(env, OWNER_2, "frozen")
    assert text.startswith("Deployments to production are frozen: quarter-end close (frozen by ")
    assert text.endswith("Approvals are paused until the freeze ends.")
    _, data = await env.quorum.status(request_id)
    assert data["votes"] == []


async def test_webhook_during_freeze_then_unfreeze_releases_it(env: Env) -> None:
    await command(env, "/freeze", RM_1, "production until tomorrow 18:00 change window")
    request_id = await env.open()
    card = await env.card_of(request_id)
    assert "Frozen until" in blocks_text(card)
    assert "change window" in blocks_text(card)
    assert buttons(card) == ["Reject", "Break glass"]

    await env.quorum.click(ActionId.approve, SRE[0], request_id)
    await ephemeral_to(env, SRE[0], "frozen")
    listed = await command(env, "/freeze", OWNER_2, "list")
    assert ":snowflake: *now* until" in listed.text
    assert "change window" in listed.text

    reply = await command(env, "/unfreeze", RM_1, "production")
    assert reply.public
    assert reply.text.startswith(f":sunny: <@{RM_1}> ended `frz_")

    # released: the card offers Approve again, and the SLA clock starts when the freeze ended
    await env.slack.wait_for(
        "chat.update",
        lambda c: c.args.get("ts") == card_ts(env, request_id) and "Approve" in buttons(c.args),
    )
    released = await stored(env, request_id)
    assert released.frozen_until is None
    assert released.sla_started_at is not None
    messages = await queued(env.db_url)
    assert any("*Freeze ended* in production" in m["text"] for m in messages)

    for user in (OWNER_2, OWNER_3, SRE[0]):
        await env.quorum.click(ActionId.approve, user, request_id)
    callbacks = await env.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "approved"


async def test_service_scoped_freeze_leaves_other_services_alone(env: Env) -> None:
    await command(env, "/freeze", RM_1, "production services vault for 1h key rotation")
    request_id = await env.open()  # storefront
    card = await env.card_of(request_id)
    assert "Frozen" not in blocks_text(card)
    assert "Approve" in buttons(card)
    vault_id = await env.open(service="vault", version="v9")
    vault_card = await env.card_of(vault_id)
    assert "key rotation" in blocks_text(vault_card)

    reply = await command(env, "/unfreeze", RM_1, "frz_does_not_exist")
    assert reply.text.startswith("No active freeze or environment 'frz_does_not_exist'")


def card_ts(env: Env, request_id: str) -> str:
    posts = env.slack.calls_to(
        "chat.postMessage", lambda c: c.ok and request_id in blocks_text(c.args)
    )
    return str(posts[0].response["ts"])
