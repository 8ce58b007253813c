"""Jenkins end to end over real HTTP: a generic signed webhook naming an `input` step → card →
votes → `proceedEmpty` / `abort` on a fake Jenkins (with and without a crumb), and a build that
is gone shown on the card."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from handlers.action_ids import ActionId
from tests.e2e.harness import SRE, Env, body_for, running_env
from tests.fakes.jenkins import API_TOKEN, USER, FakeJenkins

OWNER_2, OWNER_3 = "U0WEB2", "U0WEB3"


@dataclass
class JenkinsEnv:
    env: Env
    jenkins: FakeJenkins

    async def open(self, input_url: str, **overrides: Any) -> str:
        status, data = await self.env.quorum.webhook(
            body_for(jenkins={"input_url": input_url}, **overrides)
        )
        assert status == 202, data
        await self.env.card_of(data["id"])
        return str(data["id"])

    async def approve_all(self, request_id: str) -> None:
        for user in (OWNER_2, OWNER_3, SRE[0]):
            status, _ = await self.env.quorum.click(ActionId.approve, user, request_id)
            assert status == 200


@pytest.fixture(params=[False, True], ids=["no-crumb", "crumb"])
async def jk(db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[JenkinsEnv]:
    async with FakeJenkins(require_crumb=request.param) as jenkins:
        settings = {
            "JENKINS_USER": USER,
            "JENKINS_API_TOKEN": API_TOKEN,
            "JENKINS_URL": jenkins.base_url,
        }
        async with running_env(db_url, extra_settings=settings) as env:
            yield JenkinsEnv(env, jenkins)


def _blocks(call: Any) -> str:
    return json.dumps(call.args.get("blocks"), ensure_ascii=False)


async def test_approval_proceeds_the_input_step(jk: JenkinsEnv) -> None:
    request_id = await jk.open(jk.jenkins.add_input(build="42"))
    await jk.approve_all(request_id)
    [answer] = await jk.jenkins.wait_for()
    assert answer.path == "/job/storefront-deploy/42/input/Q/proceedEmpty"
    assert jk.jenkins.crumb_requests == (1 if jk.jenkins.require_crumb else 0)
    await jk.env.slack.wait_for(
        "chat.update", lambda c: "Approved" in _blocks(c) and "pipeline notified" in _blocks(c)
    )
    assert jk.env.pipeline.received == []  # the generic callback is not used for Jenkins


async def test_rejection_aborts_and_a_gone_build_is_shown(jk: JenkinsEnv) -> None:
    request_id = await jk.open(jk.jenkins.add_input(build="43"))
    await jk.env.quorum.click(ActionId.reject, SRE[1], request_id)
    await jk.env.slack.wait_for("views.open")
    await jk.env.quorum.submit_reject(SRE[1], request_id, "not during the sale")
    [answer] = await jk.jenkins.wait_for()
    assert answer.extra["action"] == "abort"

    gone = f"{jk.jenkins.base_url}/job/storefront-deploy/41/input/Q/"
    request_id = await jk.open(gone, version="v1.4.3")
    await jk.approve_all(request_id)
    await jk.env.slack.wait_for(
        "chat.update",
        lambda c: request_id in json.dumps(c.args) and "build is gone" in _blocks(c),
        timeout=10,
    )


async def test_without_jenkins_credentials_the_card_says_so(env: Env) -> None:
    request_id = await env.open(jenkins={"input_url": "http://127.0.0.1:9/job/x/1/input/Q/"})
    for user in (OWNER_2, OWNER_3, SRE[0]):
        await env.quorum.click(ActionId.approve, user, request_id)
    await env.slack.wait_for(
        "chat.update",
        lambda c: "no adapter for 'jenkins'" in _blocks(c),
        timeout=10,
    )
