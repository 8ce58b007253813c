"""The Jenkins notifier: answering an input step (proceedEmpty / abort) with basic auth, a crumb
when Jenkins asks for one, and a permanent failure when the build is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.domain.model import Delivery, RequestState
from bot.pipelines.jenkins import JenkinsNotifier, jenkins_root
from tests.fakes.jenkins import API_TOKEN, USER, FakeJenkins
from tests.storage.builders import NOW, a_request


@pytest.mark.parametrize(
    ("input_url", "root"),
    [
        ("https://ci.example.com/job/deploy/42/input/Q/", "https://ci.example.com/"),
        (
            "https://ci.example.com/jenkins/job/a/job/b/7/input/Q/",
            "https://ci.example.com/jenkins/",
        ),
        ("http://127.0.0.1:8080/job/x/1/input/Go/", "http://127.0.0.1:8080/"),
    ],
)
def test_jenkins_root(input_url: str, root: str) -> None:
    assert jenkins_root(input_url) == root


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (RequestState.APPROVED, "proceedEmpty"),
        (RequestState.REJECTED, "abort"),
        (RequestState.EXPIRED, "abort"),
    ],
)
def test_payload_action(state: RequestState, action: str) -> None:
    request = a_request(
        callback={"jenkins": {"input_url": "https://ci/job/x/1/input/Q/"}},
        state=state,
        decided_at=NOW,
    )
    notifier = JenkinsNotifier(USER, API_TOKEN, _no_http, base_url="https://ci")
    payload = notifier.delivery_payload(request, [])
    assert payload["action"] == action
    assert payload["input_url"] == "https://ci/job/x/1/input/Q/"


def _no_http() -> aiohttp.ClientSession:
    raise AssertionError("no HTTP expected")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _delivery(input_url: str, action: str) -> Delivery:
    payload: dict[str, Any] = {"input_url": input_url, "action": action}
    return Delivery(
        id="dlv-1",
        request_id="req-1",
        target="jenkins",
        payload=payload,
        created_at=NOW,
        next_attempt_at=NOW,
    )


@pytest.mark.parametrize("require_crumb", [False, True])
@pytest.mark.parametrize("action", ["proceedEmpty", "abort"])
async def test_answers_the_input_step(
    http: aiohttp.ClientSession, require_crumb: bool, action: str
) -> None:
    async with FakeJenkins(require_crumb=require_crumb) as jenkins:
        notifier = JenkinsNotifier(USER, API_TOKEN, lambda: http, base_url=jenkins.base_url)
        result = await notifier.deliver(_delivery(jenkins.add_input(), action))
        assert result.ok, result
        [answer] = jenkins.recorded
        assert answer.path == f"/job/storefront-deploy/42/input/Q/{action}"
        assert jenkins.crumb_requests == (1 if require_crumb else 0)


async def test_a_gone_build_is_a_permanent_failure(http: aiohttp.ClientSession) -> None:
    async with FakeJenkins() as jenkins:
        notifier = JenkinsNotifier(USER, API_TOKEN, lambda: http, base_url=jenkins.base_url)
        gone = f"{jenkins.base_url}/job/storefront-deploy/41/input/Q/"
        result = await notifier.deliver(_delivery(gone, "proceedEmpty"))
    assert (result.ok, result.permanent) == (False, True)
    assert "build is gone" in result.detail


async def test_wrong_credentials_are_permanent(http: aiohttp.ClientSession) -> None:
    async with FakeJenkins() as jenkins:
        notifier = JenkinsNotifier(USER, "wrong-token", lambda: http, base_url=jenkins.base_url)
        result = await notifier.deliver(_delivery(jenkins.add_input(), "abort"))
    assert (result.ok, result.permanent) == (False, True)
    assert "Jenkins HTTP 401" in result.detail


async def test_an_unreachable_jenkins_is_retried(http: aiohttp.ClientSession) -> None:
    async with FakeJenkins() as jenkins:
        url = jenkins.add_input()
    # The server is stopped now: connection refused.
    notifier = JenkinsNotifier(USER, API_TOKEN, lambda: http, base_url=jenkins.base_url)
    result = await notifier.deliver(_delivery(url, "proceedEmpty"))
    assert (result.ok, result.permanent) == (False, False)


async def test_credentials_only_go_to_input_steps_under_jenkins_url(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeJenkins() as jenkins:
        pinned = JenkinsNotifier(USER, API_TOKEN, lambda: http, base_url=jenkins.base_url)
        assert (await pinned.deliver(_delivery(jenkins.add_input(), "abort"))).ok
        elsewhere = "http://127.0.0.1:9/job/x/1/input/Q/"  # a pipeline naming another host
        result = await pinned.deliver(_delivery(elsewhere, "abort"))
        assert (result.ok, result.permanent) == (False, True)
        assert "not under JENKINS_URL" in result.detail
        assert len(jenkins.recorded) == 1
