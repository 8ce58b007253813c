"""The GitLab adapter: token checks, Deployment Hook parsing (blocked → request, later statuses →
updates), approval payloads and delivery through a fake GitLab API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.domain.model import Delivery, Requester, RequestState, Rule, VoteKind
from bot.identity import resolve_static
from bot.pipelines.base import Ignored, InboundRequest, InboundUpdate, SignatureError
from bot.pipelines.gitlab import GitLabAdapter
from bot.pipelines.hmac_tokens import TokenVerifier
from bot.policy import Policy
from tests.fakes.gitlab_api import API_TOKEN, FakeGitLab
from tests.paths import FIXTURES
from tests.storage.builders import NOW, a_request, a_vote

TOKEN, OLD_TOKEN = "gitlab-hook-token-new", "gitlab-hook-token-old"


def deployment_event(**changes: Any) -> dict[str, Any]:
    """shared/fixtures/gitlab/deployment_event.json with `changes` applied."""
    data = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
    assert isinstance(data, dict)
    data.update(changes)
    return data


def hook_headers(token: str = TOKEN, **extra: str) -> dict[str, str]:
    return {"X-Gitlab-Token": token, "X-Gitlab-Event": "Deployment Hook", **extra}


def _adapter(
    http: aiohttp.ClientSession | None = None,
    *,
    url: str | None = "https://gitlab.example.com",
    token: str | None = API_TOKEN,
    represented_as: dict[str, str] | None = None,
) -> GitLabAdapter:
    def session() -> aiohttp.ClientSession:
        assert http is not None
        return http

    return GitLabAdapter(
        TokenVerifier([TOKEN, OLD_TOKEN], header="X-Gitlab-Token"),
        session,
        gitlab_url=url,
        api_token=token,
        represented_as=represented_as,
    )


def _raw(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_blocked_deployment_opens_a_request() -> None:
    body = _raw(deployment_event(status="blocked", environment="production"))
    inbound = _adapter().parse(body, hook_headers(**{"X-Gitlab-Event-UUID": "uuid-1"}))
    assert isinstance(inbound, InboundRequest)
    assert inbound.source == "gitlab"
    assert inbound.delivery_id == "30/15:blocked"  # what it is about, not the UUID header
    assert inbound.repository == "root/test-deployment-webhooks"
    assert inbound.environment == "production"
    assert inbound.requester.email == "admin@example.com"
    assert inbound.requester.gitlab == "root"
    assert inbound.details.sha == "279484c0"
    assert inbound.details.title == "Add new file"
    assert [link.url for link in inbound.details.links] == [
        "http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796",
        "http://10.126.0.2:3000/root/test-deployment-webhooks/-/commit/"
        "279484c09fbe69ededfced8c1bb6e6d24616b468",
    ]
    assert inbound.callback == {"gitlab": {"project_id": 30, "deployment_id": 15}}
    assert inbound.external_ref == "30/15"


def _user(username: str | None, email: str | None, name: str = "Someone") -> dict[str, Any]:
    return {"id": 7, "name": name, "username": username, "avatar_url": None, "email": email}


REQUESTERS = {
    "the docs' example: username and email": (
        None,
        Requester(gitlab="root", email="admin@example.com"),
        "root",
    ),
    # GitLab shows an address the user has not made public as [REDACTED] (gitlab#344230).
    "a private email": (
        _user("alice", "[REDACTED]"),
        Requester(gitlab="alice"),
        "alice",
    ),
    "no username": (_user(None, "bob@example.com"), Requester(email="bob@example.com"), "Someone"),
    "a project access token's bot": (
        _user("project_30_bot_3f9a1c", "project_30_bot_3f9a1c@noreply.gitlab.example.com"),
        Requester(),
        "project_30_bot_3f9a1c, a GitLab bot user",
    ),
    "an older project bot": (
        _user("project_30_bot2", "project30_bot2@noreply.gitlab.example.com"),
        Requester(),
        "project_30_bot2, a GitLab bot user",
    ),
    "a group access token's bot": (
        _user("group_12_bot_a1b2", "[REDACTED]"),
        Requester(),
        "group_12_bot_a1b2, a GitLab bot user",
    ),
    "a service account": (
        _user("service_account_group_12_9f8e7d", "[REDACTED]"),
        Requester(),
        "service_account_group_12_9f8e7d, a GitLab bot user",
    ),
    "a bot known only by its address": (
        _user(None, "project_30_bot_3f9a1c@noreply.gitlab.example.com"),
        Requester(),
        "a GitLab bot user",
    ),
    "no user": ("absent", Requester(), None),
}


@pytest.mark.parametrize(
    ("user", "requester", "described"), REQUESTERS.values(), ids=REQUESTERS.keys()
)
def test_the_requester_is_the_gitlab_user_unless_a_bot(
    user: Any, requester: Requester, described: str | None
) -> None:
    event = deployment_event(status="blocked")
    if user == "absent":
        event.pop("user")
    elif user is not None:
        event["user"] = user
    inbound = _adapter().parse(_raw(event), hook_headers())
    assert isinstance(inbound, InboundRequest)
    assert inbound.requester == requester
    description = inbound.details.description or ""
    if described is None:
        assert "requested by" not in description
    else:
        assert described in description


def test_usernames_map_through_identities_gitlab_and_bots_never_do() -> None:
    policy = Policy.from_mapping(
        {
            "version": 1,
            "defaults": {"channel": "C0DEPLOYS"},
            "teams": {"web": {"channel": "C0WEB", "members": ["U0WEB1"]}},
            "environments": {
                "production": {"rules": [{"name": "review", "from": "owner", "approvals": 1}]}
            },
            "identities": {
                # Even listed, a bot maps to nobody: the adapter does not name it as requester.
                "gitlab": {"Root": "U0WEB1", "project_30_bot_3f9a1c": "U0BOT1"},
                "email": {"project_30_bot_3f9a1c@noreply.gitlab.example.com": "U0BOT2"},
            },
        }
    )

    def slack_user(user: dict[str, Any] | None) -> str | None:
        event = deployment_event(status="blocked")
        if user is not None:
            event["user"] = user
        inbound = _adapter().parse(_raw(event), hook_headers())
        assert isinstance(inbound, InboundRequest)
        return resolve_static(policy, inbound.requester).slack_user

    assert slack_user(None) == "U0WEB1"  # `root`, case-insensitively
    bot = _user("project_30_bot_3f9a1c", "project_30_bot_3f9a1c@noreply.gitlab.example.com")
    assert slack_user(bot) is None


@pytest.mark.parametrize(
    "status", ["approved", "rejected", "running", "success", "failed", "canceled"]
)
def test_later_statuses_are_updates(status: str) -> None:
    body = _raw(deployment_event(status=status))
    update = _adapter().parse(body, hook_headers())
    assert isinstance(update, InboundUpdate)
    assert (update.external_ref, update.status, update.actor) == ("30/15", status, "root")
    assert update.closes
    assert update.delivery_id == f"30/15:{status}"  # the deployment and its status


@pytest.mark.parametrize(
    "headers",
    [
        {"Idempotency-Key": "idem-1", "X-Gitlab-Event-UUID": "uuid-1"},
        {"Idempotency-Key": "idem-2"},
        {"X-Gitlab-Event-UUID": "uuid-2"},
        {},
    ],
)
def test_a_delivery_is_keyed_by_what_it_is_about_whatever_its_id_headers(
    headers: dict[str, str],
) -> None:
    """A replayed body may carry any Idempotency-Key or event UUID (GitLab signs neither)."""
    update = _adapter().parse(_raw(deployment_event()), hook_headers(**headers))
    assert update.delivery_id == "30/15:success"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (hook_headers(token="nope"), "X-Gitlab-Token does not match"),
        ({"X-Gitlab-Event": "Deployment Hook"}, "missing header X-Gitlab-Token"),
    ],
)
def test_bad_tokens_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        _adapter().parse(_raw(deployment_event()), headers)


def test_the_old_token_still_works_during_rotation() -> None:
    assert _adapter().parse(_raw(deployment_event()), hook_headers(token=OLD_TOKEN))


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Gitlab-Event": "Push Hook"}, {"object_kind": "push"}),
        ({}, deployment_event(status="created")),
        ({}, deployment_event(status="skipped")),
    ],
)
def test_events_not_gated_are_ignored_with_204(headers: dict[str, str], body: Any) -> None:
    with pytest.raises(Ignored) as caught:
        _adapter().parse(_raw(body), {**hook_headers(), **headers})
    assert caught.value.status == 204


GITLAB_CALLBACK = {"gitlab": {"project_id": 30, "deployment_id": 15}}


def test_approval_payload_with_represented_as() -> None:
    request = a_request(
        source="gitlab",
        callback=GITLAB_CALLBACK,
        state=RequestState.APPROVED,
        decided_at=NOW,
        decision_reason="owner-review: U1, U2; security: U3",
        rules=(Rule("owner-review", "web", 2), Rule("security", "security", 1)),
    )
    votes = [a_vote("U1", reason="looks good")]
    adapter = _adapter(represented_as={"security": "security-team"})
    payload = adapter.delivery_payload(request, votes)
    assert payload["project_id"] == 30
    assert payload["deployment_id"] == 15
    assert payload["body"]["status"] == "approved"
    assert payload["body"]["represented_as"] == "security-team"
    assert "owner-review: U1, U2" in payload["body"]["comment"]
    assert "U1: looks good" in payload["body"]["comment"]
    assert "represented_as" not in _adapter().delivery_payload(request, votes)["body"]


@pytest.mark.parametrize("state", [RequestState.REJECTED, RequestState.EXPIRED])
def test_rejection_payload(state: RequestState) -> None:
    request = a_request(
        source="gitlab",
        callback=GITLAB_CALLBACK,
        state=state,
        decided_at=NOW,
        decision_reason="why",
    )
    votes = [a_vote("U9", kind=VoteKind.REJECT, reason="broken build")]
    body = _adapter().delivery_payload(request, votes)["body"]
    assert body["status"] == "rejected"
    assert ("U9: broken build" if state is RequestState.REJECTED else "expired") in body["comment"]


@pytest.fixture
async def gitlab() -> AsyncIterator[FakeGitLab]:
    async with FakeGitLab() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _delivery() -> Delivery:
    return Delivery(
        id="dlv-1",
        request_id="req-1",
        target="gitlab",
        payload={
            "project_id": 30,
            "deployment_id": 15,
            "body": {"status": "approved", "comment": "ok"},
        },
        created_at=NOW,
        next_attempt_at=NOW,
    )


@pytest.mark.parametrize(
    ("answer", "ok", "permanent", "detail"),
    [
        ((201, {}), True, False, "deployment approved in GitLab"),
        (
            (403, {"message": "You don't have permission to approve this deployment"}),
            False,
            True,
            "GitLab HTTP 403: You don't have permission to approve this deployment",
        ),
        ((400, {"message": "Deployment is not blocked"}), False, True, "Deployment is not blocked"),
        ((503, {"message": "maintenance"}), False, False, "GitLab HTTP 503"),
    ],
)
async def test_delivery_outcomes(
    gitlab: FakeGitLab,
    http: aiohttp.ClientSession,
    answer: tuple[int, dict[str, Any]],
    ok: bool,
    permanent: bool,
    detail: str,
) -> None:
    gitlab.answers.append(answer)
    result = await _adapter(http, url=gitlab.base_url).deliver(_delivery())
    assert (result.ok, result.permanent) == (ok, permanent)
    assert detail in result.detail
    [call] = gitlab.recorded
    assert call.path == "/api/v4/projects/30/deployments/15/approval"
    assert call.body == {"status": "approved", "comment": "ok"}


async def test_a_wrong_api_token_is_permanent(
    gitlab: FakeGitLab, http: aiohttp.ClientSession
) -> None:
    result = await _adapter(http, url=gitlab.base_url, token="wrong").deliver(_delivery())
    assert (result.ok, result.permanent) == (False, True)
    assert "401" in result.detail


async def test_without_api_settings_delivery_fails_visibly() -> None:
    result = await _adapter(url=None, token=None).deliver(_delivery())
    assert (result.ok, result.permanent) == (False, True)
    assert "GITLAB_URL and GITLAB_TOKEN" in result.detail


@pytest.mark.parametrize(
    ("status", "actor", "reason"),
    [
        ("canceled", "root", "the deployment was canceled in GitLab by root"),
        ("approved", "alice", "approved directly in GitLab by alice; the Slack vote is closed"),
        ("failed", None, "the deployment failed in GitLab before a decision"),
        ("running", None, "the deployment started in GitLab without Quorum's decision"),
    ],
)
def test_closing_reasons(status: str, actor: str | None, reason: str) -> None:
    from bot.services.updates import closing_reason

    update = InboundUpdate(
        source="gitlab",
        delivery_id="d",
        external_ref="30/15",
        status=status,
        actor=actor,
        detail="",
        closes=True,
        body_sha256="0" * 64,
    )
    assert closing_reason(update) == reason


SIGNING = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _signed_adapter(*, with_token: bool) -> GitLabAdapter:
    from bot.pipelines.signing import StandardWebhookVerifier

    return GitLabAdapter(
        TokenVerifier([TOKEN], header="X-Gitlab-Token") if with_token else None,
        lambda: aiohttp.ClientSession(),
        signature=StandardWebhookVerifier([SIGNING], clock=lambda: NOW),
        gitlab_url="https://gitlab.example.com",
        api_token=API_TOKEN,
    )


@pytest.mark.parametrize("with_token", [False, True])
def test_standard_webhooks_signature_when_a_signing_secret_is_configured(
    with_token: bool,
) -> None:
    from bot.pipelines.signing import StandardWebhookSigner

    body = _raw(deployment_event(status="blocked", environment="production"))
    signed = StandardWebhookSigner(SIGNING).sign("msg_gitlab_1", NOW, body)
    headers = {"X-Gitlab-Event": "Deployment Hook", **signed}
    if with_token:
        headers["X-Gitlab-Token"] = TOKEN
    inbound = _signed_adapter(with_token=with_token).parse(body, headers)
    assert isinstance(inbound, InboundRequest)
    assert inbound.delivery_id == "30/15:blocked"  # what it is about, as without a signature

    tampered = body.replace(b"production", b"staging")
    with pytest.raises(SignatureError):
        _signed_adapter(with_token=with_token).parse(tampered, headers)
    unsigned = {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": TOKEN}
    with pytest.raises(SignatureError):
        _signed_adapter(with_token=with_token).parse(body, unsigned)


def test_an_adapter_needs_some_way_to_verify() -> None:
    with pytest.raises(ValueError, match="token or a signing secret"):
        GitLabAdapter(None, lambda: aiohttp.ClientSession(), gitlab_url=None, api_token=None)
