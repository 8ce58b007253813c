"""The GitHub adapter: signature checks, parsing protection-rule deliveries (schema shape and
current shape), review and status-report payloads, and delivery through a fake GitHub API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest

from bot.clock import FixedClock
from bot.domain.model import Delivery, Requester, RequestState, VoteKind
from bot.identity import resolve_static
from bot.pipelines.base import (
    Ignored,
    InboundRequest,
    InvalidPayload,
    ResolvesRequester,
    SignatureError,
)
from bot.pipelines.github import COMMENT_LIMIT, GitHubAdapter, RunRef, run_of
from bot.pipelines.github_auth import GitHubAppAuth, app_jwt
from bot.pipelines.hmac_tokens import HubSignatureVerifier
from bot.policy import Policy
from tests.fakes.github_api import APP_ID, INSTALLATION_ID, RUN_ID, AppKey, FakeGitHub
from tests.fakes.github_payloads import headers_for, protection_rule, schema_errors
from tests.storage.builders import NOW, a_request, a_vote

SECRET, OLD_SECRET = "gh-webhook-secret-new", "gh-webhook-secret-old"


@pytest.fixture(scope="module")
def key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
async def github(key: AppKey) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(key.public_pem) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _adapter(
    key: AppKey, api_url: str, http: aiohttp.ClientSession | None = None, clock: Any = None
) -> GitHubAdapter:
    def session() -> aiohttp.ClientSession:
        assert http is not None
        return http

    now = clock or (lambda: datetime.now(UTC))
    auth = GitHubAppAuth(APP_ID, key.private_pem, api_url=api_url, http=session, clock=now)
    return GitHubAdapter(HubSignatureVerifier([SECRET, OLD_SECRET]), auth, session)


API = "https://api.github.com"
CALLBACK = f"{API}/repos/acme/storefront/actions/runs/5453085689/deployment_protection_rule"


def _raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# --- inbound ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_sha_ref", [False, True])
def test_parses_both_payload_shapes(key: AppKey, with_sha_ref: bool) -> None:
    payload = protection_rule(CALLBACK, with_sha_ref=with_sha_ref)
    # The schema is outdated on sha/ref (see the fixtures README): only that differs.
    assert (schema_errors(payload) == []) is not with_sha_ref
    body = _raw(payload)
    inbound = _adapter(key, API).parse(body, headers_for(SECRET, body, delivery="d-1"))
    assert isinstance(inbound, InboundRequest)
    assert inbound.source == "github"
    # keyed by what it is about (signed), not by X-GitHub-Delivery (unsigned)
    again = _adapter(key, API).parse(body, headers_for(SECRET, body, delivery="d-2"))
    assert inbound.delivery_id == again.delivery_id
    assert inbound.delivery_id.startswith("about:")
    other = _raw(protection_rule(CALLBACK, with_sha_ref=with_sha_ref, deployment_id=7))
    moved = _adapter(key, API).parse(other, headers_for(SECRET, other, delivery="d-1"))
    assert moved.delivery_id != inbound.delivery_id
    assert inbound.repository == "acme/storefront"
    assert inbound.service is None
    assert inbound.environment == "production"
    assert inbound.requester.github == "octo-web"
    assert inbound.details.sha == "5275a45b7e99c7fd7265b790392c10a74101a67a"
    assert inbound.details.version == ("refs/heads/main" if with_sha_ref else "main")
    assert inbound.details.event == "push"
    assert "triggered by `push`" in (inbound.details.description or "")
    assert [link.url for link in inbound.details.links] == [
        "https://github.com/acme/storefront/pull/3"
    ]
    assert inbound.callback == {
        "github": {
            "callback_url": CALLBACK,
            "environment": "production",
            "installation_id": INSTALLATION_ID,
        }
    }
    assert inbound.external_ref == "acme/storefront#1100200"


@pytest.mark.parametrize(
    ("secret", "mangle", "reason"),
    [
        (OLD_SECRET, None, None),  # rotation: the old secret still verifies
        ("wrong-secret", None, "no matching signature"),
        (SECRET, lambda h: h.pop("X-Hub-Signature-256"), "missing header X-Hub-Signature-256"),
        (SECRET, lambda h: h.update({"X-Hub-Signature-256": "sha1=abc"}), "is not 'sha256=<hex>'"),
        (SECRET, lambda h: h.pop("X-GitHub-Delivery"), "X-GitHub-Delivery"),
    ],
)
def test_signature_and_delivery_id(
    key: AppKey, secret: str, mangle: Any, reason: str | None
) -> None:
    body = _raw(protection_rule(CALLBACK))
    headers = headers_for(secret, body, delivery="d-2")
    if mangle is not None:
        mangle(headers)
    adapter = _adapter(key, API)
    if reason is None:
        assert isinstance(adapter.parse(body, headers), InboundRequest)
        return
    with pytest.raises(SignatureError, match=reason):
        adapter.parse(body, headers)


def test_a_tampered_body_is_refused(key: AppKey) -> None:
    body = _raw(protection_rule(CALLBACK))
    headers = headers_for(SECRET, body, delivery="d-3")
    with pytest.raises(SignatureError):
        _adapter(key, API).parse(body.replace(b"production", b"staging"), headers)


@pytest.mark.parametrize(
    ("event", "action", "status"),
    [("ping", None, 200), ("push", None, 204), ("deployment_protection_rule", "created", 204)],
)
def test_events_not_gated_are_ignored(
    key: AppKey, event: str, action: str | None, status: int
) -> None:
    payload = protection_rule(CALLBACK)
    if action:
        payload["action"] = action
    body = _raw(payload if event != "ping" else {"zen": "Keep it logically awesome."})
    with pytest.raises(Ignored) as caught:
        _adapter(key, API).parse(body, headers_for(SECRET, body, delivery="d-4", event=event))
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("environment"), "environment"),
        (lambda p: p.pop("installation"), "installation"),
        (lambda p: p["repository"].pop("full_name"), "repository.full_name"),
        (
            lambda p: p.update(deployment_callback_url="https://evil.example.com/x"),
            "deployment_callback_url",
        ),
    ],
)
def test_invalid_payloads_name_the_field(key: AppKey, change: Any, field: str) -> None:
    payload = protection_rule(CALLBACK)
    change(payload)
    body = _raw(payload)
    with pytest.raises(InvalidPayload) as caught:
        _adapter(key, API).parse(body, headers_for(SECRET, body, delivery="d-5"))
    assert field in [e.field for e in caught.value.errors]


# --- outbound payloads ------------------------------------------------------------------------

GITHUB_CALLBACK = {
    "github": {"callback_url": CALLBACK, "environment": "production", "installation_id": 7}
}


@pytest.mark.parametrize(
    ("state", "reason", "expected_state", "words"),
    [
        (RequestState.APPROVED, "owner-review: U1, U2", "approved", "Approved in Slack"),
        (RequestState.REJECTED, "rejected by U3: not today", "rejected", "Rejected in Slack"),
        (RequestState.EXPIRED, "no quorum within 4h", "rejected", "expired without a decision"),
    ],
)
def test_review_payload(
    key: AppKey, state: RequestState, reason: str, expected_state: str, words: str
) -> None:
    request = a_request(
        source="github",
        callback=GITHUB_CALLBACK,
        state=state,
        decided_at=NOW,
        decision_reason=reason,
    )
    votes = [a_vote("U3", kind=VoteKind.REJECT, reason="not today")]
    payload = _adapter(key, API).delivery_payload(request, votes)
    assert payload["callback_url"] == CALLBACK
    assert payload["installation_id"] == 7
    assert payload["body"]["environment_name"] == "production"
    assert payload["body"]["state"] == expected_state
    assert words in payload["body"]["comment"]


def test_status_report_payload_is_bounded(key: AppKey) -> None:
    request = a_request(source="github", callback=GITHUB_CALLBACK)
    payload = _adapter(key, API).progress_payload(request, "x" * 5000)
    assert payload is not None
    assert set(payload["body"]) == {"environment_name", "comment"}
    assert len(payload["body"]["comment"]) == COMMENT_LIMIT
    assert _adapter(key, API).progress_payload(a_request(), "hi") is None  # not a GitHub request


def test_app_jwt_lives_at_most_ten_minutes(key: AppKey) -> None:
    token = app_jwt(APP_ID, key.private_pem, NOW)
    claims = jwt.decode(token, key.public_pem, algorithms=["RS256"], options={"verify_exp": False})
    assert claims["iss"] == APP_ID
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["iat"] < NOW.timestamp() < claims["exp"]


# --- delivery through the fake GitHub ----------------------------------------------------------


def _delivery(github: FakeGitHub, kind: str = "decision", **body: Any) -> Delivery:
    return Delivery(
        id="dlv-1",
        request_id="req-1",
        target="github",
        payload={
            "callback_url": github.callback_url(),
            "installation_id": INSTALLATION_ID,
            "environment": "production",
            "body": {"environment_name": "production", **body},
        },
        created_at=NOW,
        next_attempt_at=NOW,
        kind=kind,
    )


async def test_delivers_with_a_cached_installation_token(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    adapter = _adapter(key, github.base_url, http)
    first = await adapter.deliver(_delivery(github, "progress", comment="1/3 approvals"))
    second = await adapter.deliver(_delivery(github, state="approved", comment="ok"))
    assert first.ok, first
    assert second.ok, second
    assert github.exchanges == 1  # the token was cached
    assert [r.extra["installation"] for r in github.recorded] == [INSTALLATION_ID] * 2
    assert github.reports()[0].body == {
        "environment_name": "production",
        "comment": "1/3 approvals",
    }
    assert github.reviews()[0].body["state"] == "approved"


async def test_token_is_renewed_shortly_before_it_expires(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    clock = FixedClock(datetime.now(UTC))
    github.clock = clock.now
    adapter = _adapter(key, github.base_url, http, clock.now)
    assert (await adapter.deliver(_delivery(github, comment="a"))).ok
    clock.advance(timedelta(minutes=50))
    assert (await adapter.deliver(_delivery(github, comment="b"))).ok
    assert github.exchanges == 1
    clock.advance(timedelta(minutes=6))  # 4 minutes left: inside the refresh margin
    assert (await adapter.deliver(_delivery(github, comment="c"))).ok
    assert github.exchanges == 2


async def test_a_wrong_app_key_fails_permanently(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    other = AppKey.generate()
    adapter = _adapter(other, github.base_url, http)
    result = await adapter.deliver(_delivery(github, state="approved", comment="ok"))
    assert not result.ok
    assert result.permanent
    assert "installation token: HTTP 401" in result.detail
    assert github.refused == ["bad JWT: InvalidSignatureError"]


@pytest.mark.parametrize(
    ("status", "answer", "permanent", "detail"),
    [
        (
            422,
            {"message": "Deployment is not waiting"},
            True,
            "HTTP 422: Deployment is not waiting",
        ),
        (502, {"message": "Server Error"}, False, "HTTP 502"),
        (429, {"message": "slow down"}, False, "HTTP 429"),
    ],
)
async def test_errors_are_classified(
    key: AppKey,
    github: FakeGitHub,
    http: aiohttp.ClientSession,
    status: int,
    answer: dict[str, Any],
    permanent: bool,
    detail: str,
) -> None:
    github.review_statuses.append((status, answer))
    result = await _adapter(key, github.base_url, http).deliver(
        _delivery(github, state="rejected", comment="no")
    )
    assert not result.ok
    assert result.permanent is permanent
    assert detail in result.detail


async def test_a_refused_token_is_forgotten_and_retried(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    adapter = _adapter(key, github.base_url, http)
    assert (await adapter.deliver(_delivery(github, comment="a"))).ok
    github.tokens.clear()  # GitHub revoked it
    result = await adapter.deliver(_delivery(github, comment="b"))
    assert (result.ok, result.permanent) == (False, False)
    assert (await adapter.deliver(_delivery(github, comment="c"))).ok
    assert github.exchanges == 2


async def test_never_sends_the_token_off_the_api_host(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    delivery = _delivery(github, comment="a")
    delivery = replace(
        delivery, payload={**delivery.payload, "callback_url": "http://127.0.0.1:9/x"}
    )
    result = await _adapter(key, github.base_url, http).deliver(delivery)
    assert (result.ok, result.permanent) == (False, True)
    assert github.exchanges == 0


# --- status report text (bot/services/progress.py) ---------------------------------------------


@pytest.mark.parametrize(
    ("approvers", "expected"),
    [
        ((), "0/3 approvals — waiting on web, sre"),
        (("U1", "U2"), "2/3 approvals — waiting on sre"),
        (("U1", "U2", "S1"), "3/3 approvals\n"),
    ],
)
def test_progress_comment(approvers: tuple[str, ...], expected: str) -> None:
    from bot.domain.model import RejectMode, Rule
    from bot.domain.quorum import tally
    from bot.services.progress import card_url, progress_comment

    rules = (Rule("owner-review", "web", 2), Rule("sre-signoff", "sre", 1))
    eligible = {"web": frozenset({"U1", "U2"}), "sre": frozenset({"S1"})}
    votes = [a_vote(user) for user in approvers]
    link = card_url("C0WEB", "1712345678.901234")
    assert link == "https://slack.com/archives/C0WEB/p1712345678901234"
    text = progress_comment(
        a_request(rules=rules), tally(rules, eligible, votes, RejectMode.ANY), "update", link
    )
    assert expected in text
    assert text.endswith(f"[Open the approval card in Slack]({link})")
    assert len(text) <= COMMENT_LIMIT


# --- who is the requester (the workflow run's triggering actor) --------------------------------

BOT = "github-actions[bot]"


def _created_by(payload: dict[str, Any], login: str, type_: str) -> dict[str, Any]:
    """The delivery with its deployment created (and sent) by `login`, a `type_` account."""
    for user in (payload["deployment"]["creator"], payload["sender"]):
        user["login"] = login
        user["type"] = type_
    return payload


async def _requester_of(
    adapter: GitHubAdapter, payload: dict[str, Any], delivery: str = "d-run"
) -> Requester:
    body = _raw(payload)
    inbound = adapter.parse(body, headers_for(SECRET, body, delivery=delivery))
    assert isinstance(inbound, InboundRequest)
    assert isinstance(adapter, ResolvesRequester)  # the webhook handler asks it
    return (await adapter.resolve_requester(inbound)).requester


IDENTITIES = Policy.from_mapping(
    {
        "version": 1,
        "defaults": {"channel": "C0DEPLOYS"},
        "teams": {"web": {"channel": "C0WEB", "members": ["U0WEB1"]}},
        "environments": {
            "production": {"rules": [{"name": "review", "from": "owner", "approvals": 1}]}
        },
        # The bots are listed to show that a `[bot]` login maps to nobody even when listed.
        "identities": {
            "github": {
                "octo-web": "U0WEB1",
                "octo-sre": "U0SRE1",
                BOT: "U0BOT1",
                "octo-web[bot]": "U0BOT2",
            }
        },
    }
)


def _mapped(requester: Requester) -> str | None:
    return resolve_static(IDENTITIES, requester).slack_user


@dataclass(frozen=True)
class RunCase:
    creator: tuple[str, str]  # login, type of the deployment's creator (and sender)
    run: dict[str, Any] | None  # add_run(**run); None: GitHub answers 404
    failure: tuple[int, dict[str, Any]] | None = None  # GitHub's answer to the lookup instead
    github: str | None = None  # the requester's GitHub login
    slack_user: str | None = None  # what it maps to


RUN_CASES = {
    "human creator, run started by them": RunCase(
        ("octo-web", "User"), {"actor": "octo-web"}, github="octo-web", slack_user="U0WEB1"
    ),
    "human creator, re-run by someone else": RunCase(
        ("octo-web", "User"),
        {"actor": "octo-web", "triggering_actor": "octo-sre"},
        github="octo-sre",
        slack_user="U0SRE1",
    ),
    "bot creator, run triggered by a human": RunCase(
        (BOT, "Bot"), {"actor": "octo-web"}, github="octo-web", slack_user="U0WEB1"
    ),
    "bot creator, no triggering_actor: the actor": RunCase(
        (BOT, "Bot"),
        {"actor": "octo-web", "triggering_actor": None},
        github="octo-web",
        slack_user="U0WEB1",
    ),
    "bot creator, run not found: unknown": RunCase((BOT, "Bot"), None),
    "bot creator, GitHub fails: unknown": RunCase(
        (BOT, "Bot"), {"actor": "octo-web"}, failure=(502, {"message": "Server Error"})
    ),
    "bot creator, App may not read Actions: unknown": RunCase(
        (BOT, "Bot"), {"actor": "octo-web"}, failure=(403, {"message": "Resource not accessible"})
    ),
    "human creator, GitHub fails: the creator": RunCase(
        ("octo-web", "User"),
        {"actor": "octo-sre"},
        failure=(500, {"message": "Server Error"}),
        github="octo-web",
        slack_user="U0WEB1",
    ),
    "[bot] triggering actor: shown, maps to nobody": RunCase(
        ("octo-web", "User"),
        {"actor": "octo-web", "triggering_actor": "dependabot[bot]", "triggering_type": "Bot"},
        github="dependabot[bot]",
    ),
    "bot creator, [bot] triggering actor: shown, maps to nobody": RunCase(
        (BOT, "Bot"), {"actor": BOT, "actor_type": "Bot"}, github=BOT
    ),
    "a Bot without the suffix gets it, so that it maps to nobody": RunCase(
        (BOT, "Bot"),
        {"actor": "octo-web", "actor_type": "Bot"},
        github="octo-web[bot]",
    ),
}


@pytest.mark.parametrize("case", RUN_CASES.values(), ids=RUN_CASES.keys())
async def test_the_requester_is_who_triggered_the_run(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession, case: RunCase
) -> None:
    if case.run is not None:
        github.add_run(**case.run)
    if case.failure is not None:
        github.run_statuses.append(case.failure)
    payload = _created_by(protection_rule(github.callback_url()), *case.creator)
    requester = await _requester_of(_adapter(key, github.base_url, http), payload)
    assert (requester.github, _mapped(requester)) == (case.github, case.slack_user)
    [lookup] = github.run_lookups
    assert lookup.path == f"/repos/acme/storefront/actions/runs/{RUN_ID}"
    assert lookup.extra["installation"] == INSTALLATION_ID
    assert lookup.headers["Accept"] == "application/vnd.github+json"


async def test_a_network_failure_leaves_a_bot_created_deployment_unknown(
    key: AppKey, http: aiohttp.ClientSession
) -> None:
    api = "http://127.0.0.1:9"  # nothing listens: neither the token nor the run can be had
    payload = _created_by(protection_rule(f"{api}/{CALLBACK.removeprefix(API + '/')}"), BOT, "Bot")
    assert await _requester_of(_adapter(key, api, http), payload) == Requester()


async def test_a_slow_github_is_given_up_on(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.pipelines.github as module

    github.add_run(actor="octo-web")
    adapter = _adapter(key, github.base_url, http)

    async def stalls(run: RunRef, installation: int) -> tuple[Any, str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(module, "LOOKUP_TIMEOUT", 0.05)
    monkeypatch.setattr(adapter, "_run_actor", stalls)
    payload = _created_by(protection_rule(github.callback_url()), BOT, "Bot")
    assert await _requester_of(adapter, payload) == Requester()


@pytest.mark.parametrize(
    "callback",
    [
        "/repos/acme/other/actions/runs/5453085689/deployment_protection_rule",  # another repo
        "/repos/acme/storefront/actions/runs/x/deployment_protection_rule",
        "/repos/acme/storefront/deployments/1/deployment_protection_rule",
        "/repos/acme/storefront/actions/runs/5453085689/deployment_protection_rule?x=1",
        "/repos/acme/../actions/runs/5453085689/deployment_protection_rule",
    ],
)
async def test_no_lookup_unless_the_callback_names_a_run_of_this_repository(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession, callback: str
) -> None:
    github.add_run(actor="octo-web")
    payload = protection_rule(github.base_url + callback)  # a human creator, even
    assert await _requester_of(_adapter(key, github.base_url, http), payload) == Requester()
    assert github.run_lookups == []
    assert github.exchanges == 0


async def test_a_callback_on_a_foreign_host_is_refused_and_never_looked_up(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    adapter = _adapter(key, github.base_url, http)
    elsewhere = "http://127.0.0.1:9/repos/acme/storefront/actions/runs/1/deployment_protection_rule"
    body = _raw(protection_rule(elsewhere))
    with pytest.raises(InvalidPayload):
        adapter.parse(body, headers_for(SECRET, body, delivery="d-foreign"))
    # And were such a request built anyway, resolving it asks nobody.
    inbound = adapter.parse(
        _raw(protection_rule(github.callback_url())),
        headers_for(SECRET, _raw(protection_rule(github.callback_url())), delivery="d-own"),
    )
    assert isinstance(inbound, InboundRequest)
    foreign = replace(
        inbound, callback={"github": {**inbound.callback["github"], "callback_url": elsewhere}}
    )
    assert (await adapter.resolve_requester(foreign)).requester == Requester()
    assert github.run_lookups == []
    assert github.exchanges == 0


@pytest.mark.parametrize(
    ("callback", "api", "expected"),
    [
        (CALLBACK, API, RunRef("acme/storefront", 5453085689)),
        (
            CALLBACK.replace("acme/storefront", "ACME/Storefront"),
            API,
            RunRef("ACME/Storefront", 5453085689),
        ),
        (
            "https://ghe.example.com/api/v3/repos/acme/storefront/actions/runs/7/"
            "deployment_protection_rule",
            "https://ghe.example.com/api/v3",
            RunRef("acme/storefront", 7),
        ),
        (CALLBACK.replace("https://api.github.com", "https://api.github.com:8443"), API, None),
        (CALLBACK.replace("https://", "http://"), API, None),
        (CALLBACK.replace("api.github.com", "api.github.com.evil.example"), API, None),
        (CALLBACK.replace("https://", "https://x:y@"), API, None),
        (
            "https://ghe.example.com/repos/acme/storefront/actions/runs/7/deployment_protection_rule",
            "https://ghe.example.com/api/v3",
            None,
        ),
        (CALLBACK + "#frag", API, None),
    ],
)
def test_run_of(callback: str, api: str, expected: RunRef | None) -> None:
    assert run_of(callback, api, "acme/storefront") == expected


async def test_a_refused_token_is_forgotten_by_the_lookup(
    key: AppKey, github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    github.add_run(actor="octo-web")
    adapter = _adapter(key, github.base_url, http)
    payload = _created_by(protection_rule(github.callback_url()), BOT, "Bot")
    assert (await _requester_of(adapter, payload)).github == "octo-web"
    github.tokens.clear()  # GitHub revoked it
    assert await _requester_of(adapter, payload, "d-2") == Requester()
    assert (await _requester_of(adapter, payload, "d-3")).github == "octo-web"
    assert github.exchanges == 2
