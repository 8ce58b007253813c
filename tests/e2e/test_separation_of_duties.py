"""Separation-of-duties attacks, end to end through signed HTTP on SQLite and PostgreSQL: every row
is refused with an explanation and changes nothing.

Escalated teams filling a specialist rule: tests/e2e/test_escalation_scope.py; GitHub bot
creators and GitLab usernames: tests/e2e/test_github.py, test_gitlab.py and the adapters' tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.app import RUNTIME
from bot.services.requesters import RequesterChecks
from handlers.action_ids import ActionId
from handlers.slack_directory import FRESH_WINDOW
from tests.e2e.harness import SRE, Env, body_for
from tests.e2e.slash import OWNER_2, OWNER_3, RM_1, RM_2, command, glass_env, stored

WEB = "C0WEB"


async def votes_of(env: Env, request_id: str) -> list[str]:
    _, data = await env.quorum.status(request_id)
    return [v["user"] for v in data["votes"]]


async def refusal_to(env: Env, user: str) -> str:
    calls = await env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == user)
    return str(calls[-1].args["text"])


# --- who clicked: Slack must vouch for the person and the click ------------------------------

# (name, how the fake workspace sees OWNER_2, what the click says of itself, the refusal says)
CLICKS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("guest", {"is_restricted": True}, {}, "is a guest of this workspace"),
    ("single-channel guest", {"is_ultra_restricted": True}, {}, "is a guest of this workspace"),
    ("bot", {"is_bot": True}, {}, "is a bot or app user"),
    ("deactivated", {"deleted": True}, {}, "account is deactivated"),
    (
        "external (Slack Connect)",
        {"team_id": "T0OTHER", "is_stranger": True},
        {},
        "belongs to another organisation",
    ),
    ("foreign team.id", {}, {"team": {"id": "T0OTHER"}}, "came from another workspace"),
    ("another app", {}, {"api_app_id": "A0OTHER"}, "not sent for Quorum's Slack app"),
    ("not on the card", {}, {"message_ts": "999.999"}, "not on the request's card"),
    ("another channel", {}, {"channel": "C0ELSEWHERE"}, "not on the request's card"),
]


@pytest.mark.parametrize(
    ("slack_user", "click", "says"),
    [pytest.param(user, click, says, id=name) for name, user, click, says in CLICKS],
)
async def test_a_click_slack_does_not_vouch_for_is_refused(
    env: Env, slack_user: dict[str, Any], click: dict[str, Any], says: str
) -> None:
    request_id = await env.open()
    if slack_user:
        env.slack.add_user(OWNER_2, **slack_user)
    before = await stored(env, request_id)

    status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id, **click)

    assert status == 200
    assert says in await refusal_to(env, OWNER_2)
    assert await votes_of(env, request_id) == []
    assert (await stored(env, request_id)).revision == before.revision


async def test_a_user_slack_does_not_know_is_refused(env: Env) -> None:
    request_id = await env.open()
    env.slack.remove_user(OWNER_2)

    await env.quorum.click(ActionId.approve, OWNER_2, request_id)

    assert "Slack does not know the user" in await refusal_to(env, OWNER_2)
    assert await votes_of(env, request_id) == []


async def test_a_click_is_refused_when_slack_cannot_say_who_clicked(env: Env) -> None:
    request_id = await env.open()
    env.slack.fail_next("users.info", status=503, count=5)

    await env.quorum.click(ActionId.approve, OWNER_2, request_id)

    assert "could not check with Slack who you are" in await refusal_to(env, OWNER_2)
    assert await votes_of(env, request_id) == []


async def test_a_rejection_from_a_guest_is_refused_in_the_modal(env: Env) -> None:
    request_id = await env.open()
    env.slack.add_user(OWNER_2, is_restricted=True)

    status, text = await env.quorum.submit_reject(OWNER_2, request_id, "no")

    assert status == 200
    assert "guest" in json.loads(text)["errors"]["quorum.reason"]
    assert (await stored(env, request_id)).state.value == "pending"


# --- eligibility at decision time -----------------------------------------------------------


async def test_removal_from_the_user_group_between_two_votes_stops_the_vote_counting(
    env: Env,
) -> None:
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, SRE[0], request_id)
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert await votes_of(env, request_id) == [SRE[0], OWNER_2]
    env.slack.set_usergroup("S0SRE", [SRE[1]])  # SRE[0] leaves; the group is cached for minutes
    await asyncio.sleep(FRESH_WINDOW.total_seconds())  # "afresh": Slack answered within it

    await env.quorum.click(ActionId.approve, OWNER_3, request_id)  # would decide with SRE[0]

    await env.slack.wait_for(
        "usergroups.users.list", lambda c: c.ok and c.response["users"] == [SRE[1]]
    )
    assert (await stored(env, request_id)).state.value == "pending"
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        trail = await uow.events.list_for(request_id)
    dropped = [e for e in trail if e.kind == "vote.not_counted"]
    assert [e.data["voter"] for e in dropped] == [SRE[0]]

    await env.quorum.click(ActionId.approve, SRE[1], request_id)
    await env.pipeline.wait_for(1)
    assert (await stored(env, request_id)).state.value == "approved"


async def test_a_deactivated_voter_stops_counting_when_the_request_would_be_decided(
    env: Env,
) -> None:
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    await env.quorum.click(ActionId.approve, OWNER_3, request_id)
    env.slack.add_user(OWNER_2, deleted=True)  # deactivated after voting (cache still says ok)
    await asyncio.sleep(FRESH_WINDOW.total_seconds())

    await env.quorum.click(ActionId.approve, SRE[0], request_id)

    assert (await stored(env, request_id)).state.value == "pending"
    assert env.pipeline.received == []


# --- break glass ----------------------------------------------------------------------------


async def test_the_breaker_cannot_fill_the_second_release_manager_through_a_delegation(
    db_url: str,
) -> None:
    async with glass_env(db_url) as env:
        request_id = await env.open()
        reply = await command(env, "/approvals", RM_2, f"delegate <@{RM_1}> for 1d")
        assert reply.text.startswith(f"<@{RM_1}> may now vote on your behalf"), reply.text
        broken = await command(env, "/approvals", RM_1, f"breakglass {request_id} outage")
        assert broken.text.startswith(":rotating_light:"), broken.text
        for user in (OWNER_2, OWNER_3, SRE[0]):
            await env.quorum.click(ActionId.approve, user, request_id)

        await env.quorum.click(ActionId.approve, RM_1, request_id)  # as RM_2, by delegation

        text = await refusal_to(env, RM_1)
        assert "broke glass" in text
        assert "second-release-manager" in text
        assert RM_1 not in await votes_of(env, request_id)
        assert RM_2 not in await votes_of(env, request_id)
        assert (await stored(env, request_id)).state.value == "pending"

        await env.quorum.click(ActionId.approve, RM_2, request_id)
        await env.pipeline.wait_for(1)
        assert (await stored(env, request_id)).state.value == "approved"


async def test_the_breaker_cannot_record_the_review_of_their_own_break_glass(db_url: str) -> None:
    async with glass_env(db_url) as env:
        request_id = await env.open()
        await command(env, "/approvals", RM_1, f"breakglass {request_id} outage")

        own = await command(env, "/approvals", RM_1, f"review {request_id} all fine")

        assert own.text.startswith(f"You broke glass on {request_id}"), own.text
        assert (await stored(env, request_id)).reviewed_at is None
        other = await command(env, "/approvals", RM_2, f"review {request_id} all fine")
        assert other.text.startswith("Recorded the post-incident review"), other.text


# --- the requester Quorum cannot map --------------------------------------------------------

UNMAPPED: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("no requested_by", lambda body: body.pop("requested_by")),
    ("unmapped GitHub login", lambda body: body.update(requested_by={"github": "stranger"})),
    ("a bot login", lambda body: body.update(requested_by={"github": "github-actions[bot]"})),
    ("unknown email", lambda body: body.update(requested_by={"email": "nobody@example.com"})),
]


@pytest.mark.parametrize("edit", [pytest.param(e, id=name) for name, e in UNMAPPED])
async def test_a_generic_request_whose_requester_is_unmapped_is_refused(
    env: Env, edit: Callable[[dict[str, Any]], None]
) -> None:
    body = body_for(callback_url=env.pipeline.url)
    edit(body)

    status, data = await env.quorum.webhook(body)

    assert status == 422, data
    assert "requested_by" in json.dumps(data)
    assert "self_approval: false" in json.dumps(data)
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert await uow.requests.list_open() == []
    assert env.slack.calls_to("chat.postMessage") == []


async def test_an_unmapped_requester_may_be_allowed_with_one_more_approval(db_url: str) -> None:
    from tests.e2e.harness import POLICY, running_env

    policy = json.loads(json.dumps(POLICY))
    policy["environments"]["production"]["unmapped_requester"] = {
        "require_approval_from": "release-managers"
    }
    async with running_env(db_url, policy=policy) as env:
        request_id = await env.open(requested_by={"github": "stranger"})
        for user in (OWNER_2, OWNER_3, SRE[0]):
            await env.quorum.click(ActionId.approve, user, request_id)
        assert (await stored(env, request_id)).state.value == "pending"
        rules = [r.name for r in (await stored(env, request_id)).rules]
        assert rules[-1] == "requester-unknown"

        await env.quorum.click(ActionId.approve, RM_1, request_id)
        await env.pipeline.wait_for(1)
        assert (await stored(env, request_id)).state.value == "approved"


async def test_a_slack_failure_during_the_requester_lookup_blocks_approval_until_resolved(
    env: Env,
) -> None:
    env.slack.fail_next("users.lookupByEmail", status=503, count=1000)  # the sweeps fail too
    request_id = await env.open(requested_by={"email": "web2@example.com"})
    assert (await stored(env, request_id)).requester.checking

    await env.quorum.click(ActionId.approve, OWNER_3, request_id)
    assert "still checking" in await refusal_to(env, OWNER_3)
    assert await votes_of(env, request_id) == []

    env.slack.add_user(OWNER_2, email="web2@example.com")
    env.slack.recover("users.lookupByEmail")
    assert await RequesterChecks(env.quorum.deps).run() == 1
    settled = await stored(env, request_id)
    assert (settled.requester.slack_user, settled.requester.checking) == (OWNER_2, False)

    await env.quorum.click(ActionId.approve, OWNER_2, request_id)  # the requester: refused
    assert "requester" in await refusal_to(env, OWNER_2)
    await env.quorum.click(ActionId.approve, OWNER_3, request_id)
    assert await votes_of(env, request_id) == [OWNER_3]


async def test_a_requester_slack_never_finds_is_rejected_once_slack_answers(env: Env) -> None:
    env.slack.fail_next("users.lookupByEmail", status=503, count=1000)
    request_id = await env.open(requested_by={"email": "ghost@example.com"})
    assert (await stored(env, request_id)).state.value == "pending"
    env.slack.recover("users.lookupByEmail")

    assert await RequesterChecks(env.quorum.deps).run() == 1

    request = await stored(env, request_id)
    assert request.state.value == "rejected"
    assert "cannot map the requester" in (request.decision_reason or "")
    callbacks = await env.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "rejected"


# --- delegation the policy or Slack does not allow --------------------------------------------

# (name, how the fake workspace sees OWNER_3, the command's text, what the refusal says)
DELEGATIONS: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("to a guest", {"is_restricted": True}, f"delegate <@{OWNER_3}> for 1d", "guest"),
    ("to a bot", {"is_bot": True}, f"delegate <@{OWNER_3}> for 1d", "bot"),
    ("to a deactivated user", {"deleted": True}, f"delegate <@{OWNER_3}> for 1d", "deactivated"),
    (
        "to an external user",
        {"team_id": "T0OTHER", "is_stranger": True},
        f"delegate <@{OWNER_3}> for 1d",
        "another organisation",
    ),
    ("to someone Slack does not know", None, f"delegate <@{OWNER_3}> for 1d", "does not know"),
    ("for ten years", {}, f"delegate <@{OWNER_3}> for 520w", "14 days"),
    ("until 2099", {}, f"delegate <@{OWNER_3}> until 2099-12-31", "14 days"),
    ("to someone outside the teams", {}, "delegate <@U0OUT9> for 1d", "not in any team"),
]


@pytest.mark.parametrize(
    ("slack_user", "text", "says"),
    [pytest.param(user, text, says, id=name) for name, user, text, says in DELEGATIONS],
)
async def test_a_delegation_the_policy_forbids_is_refused(
    env: Env, slack_user: dict[str, Any] | None, text: str, says: str
) -> None:
    if slack_user is None:
        env.slack.remove_user(OWNER_3)
    elif slack_user:
        env.slack.add_user(OWNER_3, **slack_user)

    reply = await command(env, "/approvals", OWNER_2, text)

    assert says in reply.text, reply.text
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert await uow.delegations.list_active(env.quorum.clock.now()) == []


async def test_a_delegation_only_where_it_is_not_honoured_is_refused(db_url: str) -> None:
    from tests.e2e.harness import POLICY, running_env

    policy = {**POLICY, "delegation": {"not_honoured_in": ["production"]}}
    async with running_env(db_url, policy=policy) as env:
        reply = await command(
            env, "/approvals", OWNER_2, f"delegate <@{OWNER_3}> for 1d production"
        )

        assert "production" in reply.text
        assert "may now vote" not in reply.text, reply.text
        async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
            assert await uow.delegations.list_active(env.quorum.clock.now()) == []


async def test_a_stored_delegation_the_current_policy_forbids_does_not_count(env: Env) -> None:
    """Stored under an older, laxer policy: to someone outside the teams, for 30 days."""
    from bot.domain.model import Delegation

    request_id = await env.open()
    now = env.quorum.clock.now()
    async with env.quorum.deps.database.unit_of_work() as uow:
        await uow.delegations.add(
            Delegation(
                id="dlg_old",
                delegator=OWNER_2,
                delegate="U0OUT9",
                environments=(),
                starts_at=now,
                ends_at=now + timedelta(days=30),
                created_at=now,
            )
        )
        await uow.commit()
    assert env.quorum.app is not None  # the vote path caches delegations for a few seconds
    env.quorum.app[RUNTIME].voting.forget_delegations()

    await env.quorum.click(ActionId.approve, "U0OUT9", request_id)

    assert "not an approver" in await refusal_to(env, "U0OUT9")
    assert await votes_of(env, request_id) == []


async def test_a_release_manager_slack_no_longer_vouches_for_cannot_break_glass(
    db_url: str,
) -> None:
    async with glass_env(db_url) as env:
        request_id = await env.open()
        env.slack.add_user(RM_1, deleted=True)

        reply = await command(env, "/approvals", RM_1, f"breakglass {request_id} outage")

        assert "deactivated" in reply.text, reply.text
        assert not (await stored(env, request_id)).break_glass


async def test_the_card_says_the_requester_is_being_checked(env: Env) -> None:
    env.slack.fail_next("users.lookupByEmail", status=503, count=1000)

    request_id = await env.open(requested_by={"email": "web2@example.com"})

    card = await env.card_of(request_id)
    assert "Checking requester" in json.dumps(card["blocks"])
