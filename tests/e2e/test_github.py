"""GitHub end to end over real HTTP: a signed deployment_protection_rule delivery → card → votes →
status reports and the review call on a fake GitHub API that verifies the App JWT and the
installation token; plus bad signatures, replays, pings, unknown repositories and environments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from handlers.action_ids import ActionId
from tests.e2e.harness import POLICY, SRE, Env, running_env
from tests.fakes.github_api import APP_ID, INSTALLATION_ID, AppKey, FakeGitHub
from tests.fakes.github_payloads import headers_for, protection_rule, schema_errors

SECRET, OLD_SECRET = "gh-e2e-secret-new", "gh-e2e-secret-old"
OWNER_2, OWNER_3 = "U0WEB2", "U0WEB3"  # U0WEB1 is octo-web, the requester


def _policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    # GitHub sends no change ticket; production here asks the usual 2 owners + 1 SRE.
    policy["environments"]["production"]["require_change_ticket"] = False
    return policy


@dataclass
class GitHubEnv:
    env: Env
    github: FakeGitHub

    async def deliver(
        self,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str,
        event: str = "deployment_protection_rule",
        secret: str = SECRET,
    ) -> tuple[int, Any]:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        quorum = self.env.quorum
        assert quorum.http is not None
        async with quorum.http.post(
            f"{quorum.url}/webhooks/github",
            data=raw,
            headers=headers_for(secret, raw, delivery=delivery, event=event),
        ) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@pytest.fixture(scope="module")
def key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def gh(db_url: str, key: AppKey) -> AsyncIterator[GitHubEnv]:
    async with FakeGitHub(key.public_pem) as github:
        settings = {
            "GITHUB_WEBHOOK_SECRET": f"{SECRET} {OLD_SECRET}",
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_PRIVATE_KEY": key.private_pem,
            "GITHUB_API_URL": github.base_url,
        }
        async with running_env(db_url, policy=_policy(), extra_settings=settings) as env:
            yield GitHubEnv(env, github)


def _blocks(call: Any) -> str:
    return json.dumps(call.args.get("blocks"), ensure_ascii=False)


async def test_protection_rule_to_approved_review_with_status_reports(gh: GitHubEnv) -> None:
    payload = protection_rule(gh.github.callback_url(), with_sha_ref=True)
    status, data = await gh.deliver(payload, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert status == 202, data
    request_id = data["id"]
    card = await gh.env.card_of(request_id)
    assert card["channel"] == "C0WEB"
    assert "triggered by `push`" in _blocks_text(card)

    # the first status report links the card and says what it waits for
    [first] = await gh.github.wait_for(lambda r: "state" not in r.body)
    assert first.body["environment_name"] == "production"
    comment = first.body["comment"]
    assert "0/3 approvals — waiting on web, sre" in comment
    assert "https://slack.com/archives/C0WEB/p" in comment
    assert len(comment) <= 1024
    assert first.extra["installation"] == INSTALLATION_ID

    for user in (OWNER_2, OWNER_3):
        status, _ = await gh.env.quorum.click(ActionId.approve, user, request_id)
        assert status == 200
    reports = await gh.github.wait_for(lambda r: "state" not in r.body, count=2)
    assert "owner-review complete" in reports[1].body["comment"]
    assert "2/3 approvals — waiting on sre" in reports[1].body["comment"]

    status, _ = await gh.env.quorum.click(ActionId.approve, SRE[0], request_id)
    assert status == 200
    [review] = await gh.github.wait_for(lambda r: "state" in r.body)
    assert review.body["state"] == "approved"
    assert review.body["environment_name"] == "production"
    assert "Approved in Slack" in review.body["comment"]
    assert gh.github.exchanges == 1  # one installation token served every call
    assert gh.github.refused == []
    assert len(gh.github.reports()) == 2  # no report once decided

    await gh.env.slack.wait_for(
        "chat.update",
        lambda c: "Approved" in _blocks(c) and "pipeline notified" in _blocks(c),
        timeout=10,
    )


async def test_the_human_behind_a_bot_created_deployment_cannot_approve(gh: GitHubEnv) -> None:
    # GitHub Actions creates the deployment as github-actions[bot]; the run says who triggered it.
    gh.github.add_run(actor="someone-else", triggering_actor="octo-web")
    payload = protection_rule(gh.github.callback_url(), with_sha_ref=True)
    for user in (payload["deployment"]["creator"], payload["sender"]):
        user.update(login="github-actions[bot]", type="Bot")
    status, data = await gh.deliver(payload, delivery="d-bot-created")
    assert status == 202, data
    request_id = data["id"]
    [lookup] = gh.github.run_lookups
    assert lookup.path == "/repos/acme/storefront/actions/runs/5453085689"
    assert lookup.status == 200
    await gh.env.card_of(request_id)

    status, _ = await gh.env.quorum.click(ActionId.approve, "U0WEB1", request_id)  # octo-web
    assert status == 200
    [refusal] = await gh.env.slack.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == "U0WEB1"
    )
    assert "You are the requester" in str(refusal.args["text"])
    _, state = await gh.env.quorum.status(request_id)
    assert state["votes"] == []


async def test_a_bot_triggered_run_whose_human_is_unknown_is_rejected_through_github(
    gh: GitHubEnv,
) -> None:
    """Separation of duties fails closed: no human can be mapped (the run lookup fails and the
    creator is a bot), so production refuses it; GitHub hears it, the channel sees the card."""
    payload = protection_rule(gh.github.callback_url(), with_sha_ref=True)
    for user in (payload["deployment"]["creator"], payload["sender"]):
        user.update(login="github-actions[bot]", type="Bot")
    status, data = await gh.deliver(payload, delivery="d-bot-unknown")  # no run: lookup 404s
    assert status == 202, data
    request_id = data["id"]

    [review] = await gh.github.wait_for(lambda r: "state" in r.body)
    assert review.body["state"] == "rejected"
    assert "cannot map the requester" in review.body["comment"]
    card = await gh.env.card_of(request_id)
    assert "cannot map the requester" in _blocks_text(card)
    _, state = await gh.env.quorum.status(request_id)
    assert state["state"] == "rejected"


def _blocks_text(card: dict[str, Any]) -> str:
    return json.dumps(card.get("blocks"), ensure_ascii=False)


async def test_rejection_in_slack_rejects_the_deployment(gh: GitHubEnv) -> None:
    payload = protection_rule(gh.github.callback_url(), environment="staging")
    assert schema_errors(payload) == []
    status, data = await gh.deliver(payload, delivery="d-reject")
    assert status == 202, data
    request_id = data["id"]
    await gh.env.card_of(request_id)
    await gh.env.quorum.click(ActionId.reject, OWNER_2, request_id)
    await gh.env.slack.wait_for("views.open")
    status, _ = await gh.env.quorum.submit_reject(OWNER_2, request_id, "tests are red")
    assert status == 200
    [review] = await gh.github.wait_for(lambda r: "state" in r.body)
    assert review.body["state"] == "rejected"
    assert "tests are red" in review.body["comment"]


async def test_github_refusal_is_shown_on_the_card(gh: GitHubEnv) -> None:
    gh.github.review_statuses.extend(
        [(204, {}), (422, {"message": "Deployment protection rule already reviewed"})]
    )
    status, data = await gh.deliver(
        protection_rule(gh.github.callback_url(), environment="staging"), delivery="d-refused"
    )
    assert status == 202
    request_id = data["id"]
    await gh.github.wait_for(lambda r: "state" not in r.body)  # the first report
    await gh.env.quorum.click(ActionId.approve, OWNER_2, request_id)
    await gh.env.slack.wait_for(
        "chat.update",
        lambda c: "pipeline NOT notified" in _blocks(c) and "already reviewed" in _blocks(c),
        timeout=10,
    )


async def test_signatures_replays_and_events(gh: GitHubEnv) -> None:
    payload = protection_rule(gh.github.callback_url())
    status, data = await gh.deliver(payload, delivery="d-sig", secret="not-the-secret")
    assert status == 401
    assert "signature" in data["error"]

    status, first = await gh.deliver(payload, delivery="d-replay", secret=OLD_SECRET)
    assert status == 202
    status, again = await gh.deliver(payload, delivery="d-replay")
    assert (status, again["id"]) == (200, first["id"])
    changed = {**payload, "event": "workflow_dispatch"}  # the same deployment, another body
    status, _ = await gh.deliver(changed, delivery="d-replay-2")
    assert status == 409

    status, data = await gh.deliver({"zen": "Design for failure."}, delivery="d-ping", event="ping")
    assert (status, data) == (200, {"ignored": "ping"})
    status, data = await gh.deliver({"ref": "main"}, delivery="d-push", event="push")
    assert (status, data) == (204, None)


async def test_unknown_repository_and_environment(gh: GitHubEnv) -> None:
    payload = protection_rule(gh.github.callback_url(), repo="acme/ledger", environment="staging")
    status, data = await gh.deliver(payload, delivery="d-unknown-repo")
    assert status == 202, data
    card = await gh.env.card_of(data["id"])
    assert card["channel"] == "C0DEPLOYS"
    assert "No owner" in _blocks_text(card)

    payload = protection_rule(gh.github.callback_url(), environment="qa")
    status, data = await gh.deliver(payload, delivery="d-unknown-env")
    assert status == 422
    assert data["known"] == ["production", "staging"]


async def test_an_escalation_sends_a_status_report(db_url: str, key: AppKey) -> None:
    from datetime import UTC, datetime, timedelta

    from bot.clock import FixedClock
    from bot.services.timers import run_due

    policy = _policy()
    policy["environments"]["production"]["sla"] = {"escalate": [{"after": "1h", "to": "security"}]}
    clock = FixedClock(datetime.now(UTC))
    async with FakeGitHub(key.public_pem, clock=clock.now) as github:
        settings = {
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_PRIVATE_KEY": key.private_pem,
            "GITHUB_API_URL": github.base_url,
        }
        async with running_env(db_url, policy=policy, extra_settings=settings, clock=clock) as env:
            gh = GitHubEnv(env, github)
            status, data = await gh.deliver(
                protection_rule(github.callback_url(), with_sha_ref=True), delivery="esc-1"
            )
            assert status == 202, data
            await env.card_of(data["id"])
            await github.wait_for(lambda r: "state" not in r.body)  # the first report

            clock.advance(timedelta(hours=1, minutes=1))
            assert await run_due(env.quorum.deps) == 1
            reports = await github.wait_for(lambda r: "state" not in r.body, count=2)
            assert "escalated (level 1)" in reports[1].body["comment"]


async def _open_count(env: Env) -> int:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        return int(await uow.requests.count_open())


async def test_a_signed_body_replayed_under_new_delivery_ids_opens_one_request(
    gh: GitHubEnv,
) -> None:
    """X-GitHub-Delivery is not signed: a replay with a fresh one is still the same delivery,
    also after the delivery log has forgotten it (the deployment is known)."""
    payload = protection_rule(gh.github.callback_url())
    status, first = await gh.deliver(payload, delivery="d-original")
    assert status == 202, first
    await gh.env.card_of(first["id"])
    for n in range(5):
        status, again = await gh.deliver(payload, delivery=f"d-forged-{n}")
        assert (status, again["id"]) == (200, first["id"])
    async with gh.env.quorum.deps.database.unit_of_work() as uow:
        assert await uow.webhooks.prune(gh.env.quorum.deps.clock.now() + timedelta(days=1), 100)
        await uow.commit()
    status, late = await gh.deliver(payload, delivery="d-months-later")
    assert (status, late["id"]) == (200, first["id"])
    assert await _open_count(gh.env) == 1
    cards = [c for c in gh.env.slack.calls_to("chat.postMessage") if "blocks" in c.args]
    assert len(cards) == 1
