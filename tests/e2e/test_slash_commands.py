"""Slash commands over signed, form-encoded payloads: help, unknown subcommands, parse errors,
/approvals pending with card links, and /freeze list with the policy's calendar windows."""

from __future__ import annotations

from bot.domain.mrkdwn import escape
from handlers.action_ids import ActionId
from handlers.slash_parser import APPROVALS_HELP
from tests.e2e.harness import SIGNING_SECRET, Env
from tests.e2e.slash import (
    OWNER_1,
    OWNER_2,
    RM_1,
    card_synced,
    command,
    command_form,
    glass_env,
)


async def test_help_and_unknown_subcommand(env: Env) -> None:
    # The help's `<request-id>` placeholders are escaped, as Slack's formatting rules ask.
    help_text = escape(APPROVALS_HELP)
    reply = await command(env, "/approvals", OWNER_2, "help")
    assert (reply.status, reply.text, reply.public) == (200, help_text, False)
    assert (await command(env, "/approvals", OWNER_2, "")).text == help_text
    unknown = await command(env, "/approvals", OWNER_2, "frobnicate")
    assert unknown.text == f"I don't know `/approvals frobnicate`.\n{help_text}"


async def test_parse_errors_are_exact_and_ephemeral(env: Env) -> None:
    reply = await command(env, "/freeze", RM_1, "production until tomorow 09:00 close")
    assert not reply.public
    assert reply.text == (
        "could not read 'tomorow' as a time; try 'for 2h' or 'until 2026-12-01 18:00'"
    )
    reply = await command(env, "/freeze", RM_1, "prod for 2h close")
    assert reply.text.startswith("unknown environment 'prod' (known: production, staging)")


async def test_unsigned_command_is_rejected(env: Env) -> None:
    status, _ = await env.quorum.slack_post(
        command_form("/approvals", OWNER_2, "pending"), secret=SIGNING_SECRET + "x"
    )
    assert status == 401


async def test_pending_lists_what_waits_on_me(env: Env) -> None:
    request_id = await env.open()
    await card_synced(env, request_id)
    mine = await command(env, "/approvals", OWNER_2, "pending")
    assert mine.text.startswith("*Waiting on you* (1):\n• <https://slack.com/archives/C0WEB/p")
    assert f"|storefront → production v1.4.2> (`{request_id}`)" in mine.text
    # the requester and non-approvers are not waited on
    assert (await command(env, "/approvals", OWNER_1, "pending")).text == (
        "Nothing is waiting on you."
    )
    assert (await command(env, "/approvals", "U0NOBODY", "pending")).text == (
        "Nothing is waiting on you."
    )
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    await env.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    assert (await command(env, "/approvals", OWNER_2, "pending")).text == (
        "Nothing is waiting on you."
    )


async def test_freeze_list_shows_calendar_windows_in_my_zone(db_url: str) -> None:
    async with glass_env(db_url) as env:
        env.slack.add_user(OWNER_2, tz="Asia/Tokyo")
        reply = await command(env, "/freeze", OWNER_2, "list")
        assert reply.text.startswith("*Freezes* (times in your time zone):")
        assert "calendar *quarter-end*: Quarter-end financial close" in reply.text
        assert "JST" in reply.text
        assert "in production" in reply.text
