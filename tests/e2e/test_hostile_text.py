"""Hostile text through every message kind Quorum sends to Slack, end to end.

Webhook fields (version, a git ref, title, description, change ticket, link labels, service,
requester), `/freeze` and break-glass reasons, rejection reasons and slash-command arguments carry
`<!channel>`, forged links and mentions. What the fake Slack received (every `text`, every block,
every view, walked as JSON) and every slash-command answer must show them escaped: no `<!…>`,
no link and no mention that Quorum did not mean, no bare `&`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.clock import FixedClock
from bot.domain.mrkdwn import escape
from bot.services.breakglass import remind_reviews
from bot.services.requesters import settle
from bot.services.timers import run_due
from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, Env, running_env
from tests.e2e.slash import (
    OWNER_1,
    OWNER_2,
    OWNER_3,
    RM_1,
    RM_2,
    card_synced,
    command,
    glass_env,
)
from tests.e2e.test_timers import TUESDAY, drain, timer_policy

HOSTILE = "<!channel> <https://evil.example|approve here> &amp; <@U0RM1> *bold* `code`"
# Mentions of nobody Quorum knows: only an injection could render them.
EVIL = " <@U0EVIL1> <!subteam^S0EVIL> <#C0EVIL> <!everyone>"
LOUD = HOSTILE + EVIL
REF = "feature/<!here>"  # a valid git ref name (git check-ref-format accepts it)
SECURITY = "U0SEC1"  # in no rule of a low-risk request

# The markup Quorum means: mentions of well-formed ids (never the EVIL ones), the break-glass
# `<!here>`, links to Slack's archive and to the pipeline's own run.
_OURS = re.compile(
    r"<@[UW](?!0EVIL)[A-Z0-9]+>"
    r"|<#[CGD](?!0EVIL)[A-Z0-9]+>"
    r"|<!subteam\^S(?!0EVIL)[A-Z0-9]+>"
    r"|^<!here> :rotating_light: \*BREAK GLASS\*"
    r"|<https://(?:slack\.com/archives|ci\.example\.com)/[^|<>\s]+\|[^<>]*>"
)
_BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")
_SENT = ("chat.postMessage", "chat.update", "chat.postEphemeral", "views.open")
# How the hostile value is shown: escaped as a webhook sent it, or as typed in a slash command
# (Slack sends a typed `&` as `&amp;`, which the parser decodes: `&amp;` typed is `&amp;amp;`).
_SHOWN = (escape(HOSTILE), escape(HOSTILE.replace("&amp;", "&")))
TYPED = escape(LOUD.replace("&amp;", "&"))


def _mrkdwn_texts(value: Any) -> Iterator[str]:
    """Every text Slack parses as mrkdwn in a Web API payload (plain_text objects are not)."""
    if isinstance(value, dict):
        if value.get("type") == "plain_text":
            assert len(value.get("text", "")) <= 3000
            return
        text = value.get("text")
        if isinstance(text, str):
            yield text
        for key, child in value.items():
            if key != "text" or not isinstance(child, str):
                yield from _mrkdwn_texts(child)
    elif isinstance(value, list):
        for child in value:
            yield from _mrkdwn_texts(child)


def assert_safe(text: str, where: str) -> None:
    rest = _OURS.sub("", text)
    assert "<" not in rest, f"unescaped '<' in {where}: {text!r}"
    assert ">" not in rest, f"unescaped '>' in {where}: {text!r}"
    assert not _BARE_AMPERSAND.search(text), f"bare '&' in {where}: {text!r}"
    assert "evil.example|" not in rest or "&lt;https://evil.example|" in text, where
    if "approve here" in text:  # the hostile value is there: as written, escaped whole
        assert any(form in text for form in _SHOWN), f"hostile value altered in {where}: {text!r}"


def sent_texts(env: Env) -> list[tuple[str, str]]:
    """(method, text) of every mrkdwn text Quorum sent to the fake Slack."""
    found: list[tuple[str, str]] = []
    for call in env.slack.calls:
        if call.method in _SENT:
            found += [(call.method, text) for text in _mrkdwn_texts(call.args)]
    return found


def assert_all_safe(env: Env, replies: list[str]) -> str:
    """Check every text sent and every slash-command reply; returns them all, for coverage."""
    texts = sent_texts(env)
    assert texts, "nothing was sent"
    for method, text in texts:
        assert_safe(text, method)
    for reply in replies:
        assert_safe(reply, "a slash-command reply")
    return "\n".join([text for _, text in texts] + replies)


async def _wait_sent(env: Env, method: str, marker: str) -> str:
    calls = await env.slack.wait_for(method, lambda c: marker in json.dumps(c.args))
    return json.dumps(calls[-1].args, ensure_ascii=False)


async def test_cards_replies_refusals_and_notices_escape_hostile_fields(db_url: str) -> None:
    async with glass_env(db_url) as env:
        replies: list[str] = []
        hostile_fields = {
            "version": REF,
            "title": LOUD,
            "description": LOUD,
            "change_ticket": HOSTILE,
            "links": [{"text": LOUD, "url": "https://ci.example.com/runs/42"}],
        }
        request_id = await env.open(**hostile_fields)
        unowned = await env.open(service=HOSTILE, version=REF)
        staged = await env.open(environment="staging", requested_by={"github": HOSTILE})

        # a vote reply, then refusals (the requester; someone the unowned service does not know)
        await env.quorum.click(ActionId.approve, OWNER_2, request_id)
        await _wait_sent(env, "chat.postMessage", "approved")
        await env.quorum.click(ActionId.approve, OWNER_1, request_id)
        await env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == OWNER_1)
        await env.quorum.click(ActionId.approve, SECURITY, unowned)
        await env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == SECURITY)

        # status replies list the cards by their (hostile) titles
        replies.append((await command(env, "/approvals", SRE[1], "pending")).text)
        assert "feature/&lt;!here&gt;" in replies[-1]

        # the reject modal, then a rejection with a hostile reason: thread reply, decided card
        await env.quorum.click(ActionId.reject, OWNER_3, request_id)
        await env.slack.wait_for("views.open")
        status, _ = await env.quorum.submit_reject(OWNER_3, request_id, LOUD)
        assert status == 200
        await _wait_sent(env, "chat.postMessage", f"<@{OWNER_3}> rejected")
        await env.slack.wait_for(
            "chat.update",
            lambda c: request_id in json.dumps(c.args) and "Rejected" in json.dumps(c.args),
        )

        # a requester Slack does not know (asked later): rejected, and the card says why
        env.slack.fail_next("users.lookupByEmail", status=503, count=1000)
        ghost = await env.open(requested_by={"email": "ghost@example.com"}, version=REF)
        env.slack.recover("users.lookupByEmail")
        assert await settle(env.quorum.deps, ghost, None) == 1
        await _wait_sent(env, "chat.update", "cannot map the requester")

        everything = assert_all_safe(env, replies)
        assert escape(LOUD) in everything  # the hostile values did reach Slack, escaped
        assert "feature/&lt;!here&gt;" in everything
        assert "&lt;@U0EVIL1&gt;" in everything
        assert staged in everything
        for kind in ("You are the requester", "not an approver", "Reject storefront"):
            assert kind in everything, kind


async def test_freeze_break_glass_and_delegation_texts_escape_hostile_input(db_url: str) -> None:
    async with glass_env(db_url) as env:
        replies: list[str] = []
        request_id = await env.open(version=REF, title=LOUD)
        await card_synced(env, request_id)

        frozen = await command(env, "/freeze", RM_1, f"production for 2h {LOUD}")
        assert frozen.public
        replies.append(frozen.text)
        await _wait_sent(env, "chat.postMessage", "Deployment freeze")
        await env.slack.wait_for(
            "chat.update",
            lambda c: request_id in json.dumps(c.args) and "Frozen" in json.dumps(c.args),
        )
        await env.quorum.click(ActionId.approve, OWNER_2, request_id)  # refused: frozen
        refusal = await env.slack.wait_for(
            "chat.postEphemeral", lambda c: "frozen" in str(c.args.get("text"))
        )
        assert TYPED in refusal[-1].args["text"]
        replies.append((await command(env, "/freeze", OWNER_2, "list")).text)

        glass = await command(env, "/approvals", RM_1, f"breakglass {request_id} {LOUD}")
        replies.append(glass.text)
        await _wait_sent(env, "chat.postMessage", "BREAK GLASS")
        assert await remind_reviews(env.quorum.deps) == 2
        await _wait_sent(env, "chat.postMessage", "Post-incident review")

        replies.append((await command(env, "/unfreeze", RM_1, "production")).text)
        await _wait_sent(env, "chat.postMessage", "Freeze ended")
        replies.append((await command(env, "/unfreeze", RM_1, REF)).text)

        replies.append(
            (await command(env, "/approvals", OWNER_2, f"delegate <@{OWNER_3}> for 1d")).text
        )
        replies.append((await command(env, "/approvals", OWNER_2, "delegations")).text)
        replies.append((await command(env, "/approvals", OWNER_2, "undelegate")).text)
        replies.append((await command(env, "/approvals", OWNER_2, f"delegate {LOUD}")).text)
        replies.append((await command(env, "/approvals", OWNER_2, f"frobnicate {REF}")).text)
        replies.append((await command(env, "/freeze", RM_2, f"{REF} for 1h {LOUD}")).text)

        everything = assert_all_safe(env, replies)
        for kind in (
            "Deployment freeze",
            "Freeze ended",
            "BREAK GLASS",
            "Glass broken",
            "Post-incident review",
            "may now vote on your behalf",
            "Ended your delegation",
            "I don't know",
        ):
            assert kind in everything, kind
        assert everything.count(TYPED) >= 5  # the reasons on the notices, card, refusal


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(TUESDAY)


async def test_reminder_escalation_and_expiry_messages_escape_hostile_fields(
    db_url: str, clock: FixedClock
) -> None:
    async with running_env(db_url, policy=timer_policy(), clock=clock) as env:
        request_id = await env.open(version=LOUD, title=LOUD)
        await card_synced(env, request_id)
        for minutes in (11, 20, 30, 60):  # remind at 10m, escalate at 30m and 1h, expire at 2h
            clock.advance(timedelta(minutes=minutes))
            await run_due(env.quorum.deps)
            await drain(env, clock)

        everything = assert_all_safe(env, [])
        for kind in ("Reminder:", "Escalated (level 1)", "Escalated (level 2)", "expired"):
            assert kind in everything, kind
        assert "<@U0RM1> <@U0RM2>" in everything  # the mentions Quorum means still render
        assert everything.count(escape(LOUD)) >= 4
