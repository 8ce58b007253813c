"""GitLab end to end over real HTTP: a blocked Deployment Hook → card → votes → the approval call
on a fake GitLab; GitLab-side changes (canceled, approved in GitLab, running) update the card;
bad tokens, replays, untracked deployments and GitLab's 4xx messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from handlers.action_ids import ActionId
from tests.e2e.harness import POLICY, SRE, Env, running_env
from tests.fakes.gitlab_api import API_TOKEN, FakeGitLab
from tests.paths import FIXTURES

TOKEN, OLD_TOKEN = "gl-e2e-token-new", "gl-e2e-token-old"
OWNER_2, OWNER_3 = "U0WEB2", "U0WEB3"


def _policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    policy["environments"]["production"]["require_change_ticket"] = False
    policy["gitlab"] = {"represented_as": {"sre-signoff": "sre-approvers"}}
    # The docs' example deployment is requested by `root`.
    policy["identities"] = {**policy["identities"], "gitlab": {"root": "U0WEB1"}}
    return policy


def hook(status: str, deployment_id: int = 15, **changes: Any) -> dict[str, Any]:
    """The docs' Deployment Hook example, moved to acme/storefront's production environment."""
    data: dict[str, Any] = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
    data["project"]["path_with_namespace"] = "acme/storefront"
    data.update({"status": status, "deployment_id": deployment_id, "environment": "production"})
    data.update(changes)
    return data


@dataclass
class GitLabEnv:
    env: Env
    gitlab: FakeGitLab

    async def send(
        self,
        body: dict[str, Any],
        *,
        uuid: str,
        token: str = TOKEN,
        event: str = "Deployment Hook",
    ) -> tuple[int, Any]:
        quorum = self.env.quorum
        assert quorum.http is not None
        headers = {
            "X-Gitlab-Token": token,
            "X-Gitlab-Event": event,
            "X-Gitlab-Event-UUID": uuid,
            "Content-Type": "application/json",
        }
        async with quorum.http.post(
            f"{quorum.url}/webhooks/gitlab", data=json.dumps(body).encode(), headers=headers
        ) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def open(self, deployment_id: int = 15) -> str:
        status, data = await self.send(hook("blocked", deployment_id), uuid=f"open-{deployment_id}")
        assert status == 202, data
        await self.env.card_of(data["id"])
        return str(data["id"])


@pytest.fixture
async def gl(db_url: str) -> AsyncIterator[GitLabEnv]:
    async with FakeGitLab() as gitlab:
        settings = {
            "GITLAB_WEBHOOK_TOKEN": f"{TOKEN} {OLD_TOKEN}",
            "GITLAB_URL": gitlab.base_url,
            "GITLAB_TOKEN": API_TOKEN,
        }
        async with running_env(db_url, policy=_policy(), extra_settings=settings) as env:
            yield GitLabEnv(env, gitlab)


def _blocks(call: Any) -> str:
    return json.dumps(call.args.get("blocks"), ensure_ascii=False)


async def _card_update(gl: GitLabEnv, *needles: str) -> None:
    await gl.env.slack.wait_for(
        "chat.update", lambda c: all(n in _blocks(c) for n in needles), timeout=10
    )


async def test_blocked_deployment_to_approval_call(gl: GitLabEnv) -> None:
    request_id = await gl.open()
    for user in (OWNER_2, OWNER_3, SRE[0]):
        status, _ = await gl.env.quorum.click(ActionId.approve, user, request_id)
        assert status == 200
    [call] = await gl.gitlab.wait_for()
    assert call.path == "/api/v4/projects/30/deployments/15/approval"
    assert call.body["status"] == "approved"
    assert call.body["represented_as"] == "sre-approvers"  # quorum.yml gitlab.represented_as
    assert "Approved in Slack" in call.body["comment"]
    assert f"{OWNER_2}, {OWNER_3}" in call.body["comment"]
    await _card_update(gl, "Approved", "pipeline notified")

    # GitLab then runs the job: the card says so, the decision stands
    status, data = await gl.send(hook("running"), uuid="run-15")
    assert status == 200
    assert (data["id"], data["state"], data["closed"]) == (request_id, "approved", False)
    await _card_update(gl, "GitLab reports this deployment as running")
    assert len(gl.gitlab.recorded) == 1


async def test_the_requester_mapped_by_gitlab_username_cannot_approve(gl: GitLabEnv) -> None:
    request_id = await gl.open()
    status, _ = await gl.env.quorum.click(ActionId.approve, "U0WEB1", request_id)  # root
    assert status == 200
    [refusal] = await gl.env.slack.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == "U0WEB1"
    )
    assert "You are the requester" in str(refusal.args["text"])
    _, state = await gl.env.quorum.status(request_id)
    assert state["votes"] == []


async def test_canceled_in_gitlab_cancels_the_request_without_a_call(gl: GitLabEnv) -> None:
    request_id = await gl.open()
    await gl.env.quorum.click(ActionId.approve, OWNER_2, request_id)
    status, data = await gl.send(hook("canceled"), uuid="cancel-15")
    assert status == 200
    assert (data["id"], data["state"], data["closed"]) == (request_id, "cancelled", True)
    await _card_update(gl, "Cancelled", "canceled in GitLab by root")

    # a replay of the same delivery changes nothing, under any event UUID; a different body
    # about the same deployment and status is refused
    for uuid in ("cancel-15", "a-new-uuid"):
        status, again = await gl.send(hook("canceled"), uuid=uuid)
        assert (status, again["id"], again["closed"]) == (200, request_id, False)
    status, _ = await gl.send(hook("canceled", commit_title="not the same body"), uuid="x")
    assert status == 409

    # votes after the close are refused, and GitLab is never called
    await gl.env.quorum.click(ActionId.approve, OWNER_3, request_id)
    await gl.env.slack.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == OWNER_3)
    _, state = await gl.env.quorum.status(request_id)
    assert state["state"] == "cancelled"
    assert [v["user"] for v in state["votes"]] == [OWNER_2]
    assert gl.gitlab.recorded == []


async def test_approved_directly_in_gitlab_closes_the_vote(gl: GitLabEnv) -> None:
    request_id = await gl.open()
    status, data = await gl.send(hook("approved"), uuid="approved-15")
    assert status == 200
    assert data["state"] == "cancelled"
    await _card_update(gl, "approved directly in GitLab by root")
    assert gl.gitlab.recorded == []
    _, state = await gl.env.quorum.status(request_id)
    assert "approved directly in GitLab" in state["reason"]


async def test_gitlab_refusal_is_shown_on_the_card(gl: GitLabEnv) -> None:
    gl.gitlab.answers.append(
        (403, {"message": "You don't have permission to approve this deployment"})
    )
    request_id = await gl.open()
    await gl.env.quorum.click(ActionId.reject, OWNER_2, request_id)
    await gl.env.slack.wait_for("views.open")
    await gl.env.quorum.submit_reject(OWNER_2, request_id, "wrong build")
    [call] = await gl.gitlab.wait_for()
    assert call.body["status"] == "rejected"
    assert "wrong build" in call.body["comment"]
    await _card_update(gl, "pipeline NOT notified", "permission to approve this deployment")


async def test_tokens_events_and_untracked_deployments(gl: GitLabEnv) -> None:
    status, data = await gl.send(hook("blocked"), uuid="bad", token="not-it")
    assert status == 401
    assert "X-Gitlab-Token" in data["error"]

    status, data = await gl.send(hook("blocked", deployment_id=16), uuid="old", token=OLD_TOKEN)
    assert status == 202

    status, data = await gl.send({"object_kind": "push"}, uuid="push", event="Push Hook")
    assert (status, data) == (204, None)
    status, data = await gl.send(hook("created"), uuid="created")
    assert (status, data) == (204, None)

    status, data = await gl.send(hook("success", deployment_id=999), uuid="untracked")
    assert (status, data) == (200, {"ignored": "untracked deployment"})

    unknown_env = hook("blocked", deployment_id=17, environment="qa")
    status, data = await gl.send(unknown_env, uuid="qa")
    assert status == 422
    assert data["known"] == ["production", "staging"]


async def test_a_blocked_deployment_replayed_under_new_ids_opens_one_request(gl: GitLabEnv) -> None:
    """Neither Idempotency-Key nor the event UUID is signed: a replayed body with new ones is the
    same delivery."""
    request_id = await gl.open(deployment_id=21)
    for n in range(5):
        status, again = await gl.send(hook("blocked", 21), uuid=f"forged-{n}")
        assert (status, again["id"]) == (200, request_id)
    async with gl.env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert await uow.requests.count_open() == 1
    cards = [c for c in gl.env.slack.calls_to("chat.postMessage") if "blocks" in c.args]
    assert len(cards) == 1
