"""Break glass end to end: the button and its modal, the extra approval it adds, the callback tag,
and the post-incident review with its reminders to the release managers."""

from __future__ import annotations

import json

from bot.services.breakglass import remind_reviews
from handlers.action_ids import ActionId
from tests.e2e.harness import SRE
from tests.e2e.slash import (
    OWNER_2,
    OWNER_3,
    RM_1,
    RM_2,
    blocks_text,
    break_glass_submission,
    command,
    glass_env,
    queued,
    stored,
)


async def test_break_glass_button_adds_an_approval_and_tags_the_callback(db_url: str) -> None:
    async with glass_env(db_url) as env:
        await command(env, "/freeze", RM_1, "production for 4h incident freeze")
        request_id = await env.open()

        # anyone but a release manager is refused, ephemerally
        await env.quorum.click(ActionId.break_glass, OWNER_2, request_id)
        refusal = await env.slack.wait_for(
            "chat.postEphemeral", lambda c: c.args.get("user") == OWNER_2
        )
        assert refusal[-1].args["text"] == "Only members of release-managers may break glass."

        await env.quorum.click(ActionId.break_glass, RM_1, request_id)
        views = await env.slack.wait_for("views.open")
        assert views[0].args["view"]["callback_id"] == "quorum.break_glass_reason"

        status, text = await env.quorum.slack_post(break_glass_submission(RM_1, request_id, "x"))
        assert status == 200
        assert "reason" in json.loads(text)["errors"]["quorum.reason"]
        status, text = await env.quorum.slack_post(
            break_glass_submission(RM_1, request_id, "checkout is down, hotfix")
        )
        assert (status, text) == (200, "")

        request = await stored(env, request_id)
        assert request.break_glass
        assert [r.name for r in request.rules][-1] == "second-release-manager"
        assert request.review_due_at is not None
        await env.slack.wait_for("chat.update", lambda c: "Break glass" in blocks_text(c.args))
        loud = [m for m in await queued(env.db_url) if "BREAK GLASS" in m["text"]]
        assert len(loud) == 1
        assert loud[0]["channel"] == "C0WEB"
        assert loud[0]["text"].startswith(f"<!here> :rotating_light: *BREAK GLASS* by <@{RM_1}>")

        # the freeze no longer holds it, but the usual approvals plus a release manager are needed
        for user in (OWNER_2, OWNER_3, SRE[0]):
            await env.quorum.click(ActionId.approve, user, request_id)
        _, data = await env.quorum.status(request_id)
        assert data["state"] == "pending"
        assert len(data["votes"]) == 3
        # whoever broke glass cannot also give the second release manager's approval
        await env.quorum.click(ActionId.approve, RM_1, request_id)
        refused = await env.slack.wait_for(
            "chat.postEphemeral", lambda c: c.args.get("user") == RM_1
        )
        assert "you broke glass on it" in refused[-1].args["text"]
        _, data = await env.quorum.status(request_id)
        assert len(data["votes"]) == 3
        await env.quorum.click(ActionId.approve, RM_2, request_id)
        callbacks = await env.pipeline.wait_for(1)
        assert callbacks[0].body["decision"] == "approved"
        assert callbacks[0].body["break_glass"] is True


async def test_break_glass_command_and_review_reminders(db_url: str) -> None:
    async with glass_env(db_url) as env:
        request_id = await env.open()
        refused = await command(env, "/approvals", OWNER_2, f"breakglass {request_id} urgent fix")
        assert refused.text == "Only members of release-managers may break glass."
        reply = await command(env, "/approvals", RM_1, f"breakglass {request_id} urgent fix")
        assert reply.text.startswith(f":rotating_light: Glass broken on `{request_id}`")
        again = await command(env, "/approvals", RM_2, f"breakglass {request_id} again")
        assert again.text == f"Glass was already broken on request {request_id}."

        # reminders: one DM per release manager per day until the review is recorded
        assert await remind_reviews(env.quorum.deps) == 2
        assert await remind_reviews(env.quorum.deps) == 0
        dms = [m for m in await queued(env.db_url) if m["dm"]]
        assert sorted(m["channel"] for m in dms) == [RM_1, RM_2]
        assert f"/approvals review {request_id} &lt;summary&gt;" in dms[0]["text"]

        pending = await command(env, "/approvals", RM_2, "pending")
        assert "*Post-incident reviews to record* (break glass):" in pending.text
        assert request_id in pending.text
        not_rm = await command(env, "/approvals", OWNER_2, f"review {request_id} done")
        assert not_rm.text.startswith("Only members of release-managers")

        recorded = await command(env, "/approvals", RM_2, f"review {request_id} config drift")
        assert recorded.text == f"Recorded the post-incident review of `{request_id}`. Thank you."
        assert (await stored(env, request_id)).reviewed_at is not None
        assert await remind_reviews(env.quorum.deps) == 0
        pending = await command(env, "/approvals", RM_2, "pending")
        assert "Post-incident" not in pending.text
        async with env.quorum.deps.database.unit_of_work() as uow:
            kinds = [e.kind for e in await uow.events.list_for(request_id)]
        assert "breakglass.invoked" in kinds
        assert "review.recorded" in kinds


async def test_overdue_reviews_are_listed_and_flagged_for_release_managers(db_url: str) -> None:
    """On a fixed clock: 72 h after break glass the review is overdue, and says so."""
    from datetime import UTC, datetime, timedelta

    from bot.clock import FixedClock
    from tests.e2e.harness import running_env
    from tests.e2e.slash import GLASS_POLICY

    clock = FixedClock(datetime.now(UTC))
    async with running_env(db_url, policy=GLASS_POLICY, clock=clock) as env:
        request_id = await env.open()
        await command(env, "/approvals", RM_1, f"breakglass {request_id} payment outage")
        pending = await command(env, "/approvals", RM_2, "pending")
        assert request_id in pending.text
        assert "overdue" not in pending.text

        clock.advance(timedelta(hours=72, minutes=1))
        pending = await command(env, "/approvals", RM_2, "pending")
        assert request_id in pending.text
        assert ":warning: *overdue*, was due" in pending.text
        assert "overdue" not in (await command(env, "/approvals", OWNER_2, "pending")).text
