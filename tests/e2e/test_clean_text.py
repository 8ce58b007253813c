"""Clean text end to end, on SQLite and PostgreSQL (which refuses NUL outright): a control
character in any webhook field is a 400 naming the field, in Slack input an explanation to the
person typing; either way nothing is stored. "Required" text (a production change ticket, a
rejection or break-glass reason, a freeze reason, a review summary) is judged on what a reader
sees: zero-width characters alone are missing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from handlers.action_ids import ActionId
from tests.e2e.harness import POLICY, Env, body_for, running_env
from tests.e2e.slash import (
    OWNER_2,
    RM_1,
    RM_2,
    break_glass_submission,
    command,
    glass_env,
    queued,
    stored,
)
from tests.fakes.github_api import APP_ID, AppKey, FakeGitHub
from tests.fakes.github_payloads import headers_for, protection_rule
from tests.paths import FIXTURES

ZWSP = "\u200b"
NUL_AT = "must not contain control characters (U+0000 at position "


async def _no_request(env: Env) -> None:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert list(await uow.requests.list_open()) == []
    assert env.slack.calls_to("chat.postMessage") == []


async def _votes(env: Env, request_id: str) -> list[dict[str, Any]]:
    status, data = await env.quorum.status(request_id)
    assert status == 200
    votes: list[dict[str, Any]] = data["votes"]
    return votes


def _modal_error(text: str) -> str:
    answer = json.loads(text)
    assert answer["response_action"] == "errors"
    message: str = answer["errors"]["quorum.reason"]
    return message


# --- webhooks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": "v1.4.2\x00"}, "version"),
        ({"service": "store\x00front"}, "service"),
        ({"title": "Release \x1b[31mnow"}, "title"),
        ({"change_ticket": "CHG-\x001"}, "change_ticket"),
        ({"requested_by": {"github": "octo\x00web"}}, "requested_by.github"),
        (
            {"links": [{"text": "Run\x07", "url": "https://ci.example.com/runs/42"}]},
            "links[0].text",
        ),
    ],
)
async def test_a_control_character_in_a_webhook_is_400_naming_the_field(
    env: Env, changes: dict[str, Any], field: str
) -> None:
    status, data = await env.quorum.webhook(body_for(callback_url=env.pipeline.url, **changes))
    assert status == 400, data
    assert [f["field"] for f in data["fields"]] == [field]
    assert data["fields"][0]["message"].startswith("must not contain control characters (U+00")
    await _no_request(env)
    # the same request without it opens normally
    status, data = await env.quorum.webhook(body_for(callback_url=env.pipeline.url))
    assert status == 202, data


@pytest.mark.parametrize("ticket", [ZWSP, f"{ZWSP} \u2060\ufeff"])
async def test_an_invisible_change_ticket_is_a_missing_one(env: Env, ticket: str) -> None:
    _, missing = await env.quorum.webhook(body_for(change_ticket=None))
    status, data = await env.quorum.webhook(body_for(change_ticket=ticket))
    assert status == 422
    assert data["error"] == missing["error"]
    assert "requires a change ticket" in data["error"]
    await _no_request(env)


# --- votes ----------------------------------------------------------------------------------


async def test_a_rejection_reason_with_nul_is_refused_and_nothing_is_lost(env: Env) -> None:
    request_id = await env.open()
    status, text = await env.quorum.submit_reject(OWNER_2, request_id, "schema\x00 mismatch")
    assert status == 200  # not a 500, on PostgreSQL too
    assert _modal_error(text).startswith(f"The reason {NUL_AT}6)")
    assert await _votes(env, request_id) == []
    assert (await stored(env, request_id)).state.value == "pending"

    status, text = await env.quorum.submit_reject(OWNER_2, request_id, "schema mismatch")
    assert (status, text) == (200, "")
    _, data = await env.quorum.status(request_id)
    assert data["state"] == "rejected"
    assert [v["reason"] for v in data["votes"]] == ["schema mismatch"]


async def test_zero_width_spaces_are_no_rejection_reason(env: Env) -> None:
    request_id = await env.open()
    status, text = await env.quorum.submit_reject(OWNER_2, request_id, ZWSP * 2)
    assert status == 200
    assert _modal_error(text).startswith("A rejection needs a reason")
    assert await _votes(env, request_id) == []


# --- slash commands and break glass -----------------------------------------------------------


async def test_a_freeze_reason_must_be_clean_and_visible(env: Env) -> None:
    refused = await command(env, "/freeze", RM_1, "production for 2h close\x00 books")
    assert refused.status == 200
    assert not refused.public
    assert "must not contain control characters (U+0000" in refused.text
    invisible = await command(env, "/freeze", RM_1, f"production for 2h {ZWSP}{ZWSP}")
    assert not invisible.public
    assert invisible.text.startswith("A freeze needs a reason")
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert list(await uow.freezes.list_current(env.quorum.clock.now())) == []
    assert await queued(env.db_url) == []

    ok = await command(env, "/freeze", RM_1, "production for 2h close books")
    assert ok.public, ok.text


async def test_break_glass_and_review_texts_must_be_clean_and_visible(db_url: str) -> None:
    async with glass_env(db_url) as env:
        request_id = await env.open()
        await env.quorum.click(ActionId.break_glass, RM_1, request_id)
        await env.slack.wait_for("views.open")

        for reason, expected in (
            ("checkout\x00 down", f"The reason {NUL_AT}8)"),
            (ZWSP * 5, "Breaking glass needs a reason"),
        ):
            status, text = await env.quorum.slack_post(
                break_glass_submission(RM_1, request_id, reason)
            )
            assert status == 200
            assert _modal_error(text).startswith(expected)
        assert not (await stored(env, request_id)).break_glass
        assert [m for m in await queued(env.db_url) if "BREAK GLASS" in m["text"]] == []

        broken = await command(env, "/approvals", RM_1, f"breakglass {request_id} checkout down")
        assert broken.text.startswith(":rotating_light: Glass broken"), broken.text
        invisible = await command(env, "/approvals", RM_2, f"review {request_id} {ZWSP} {ZWSP}")
        assert invisible.text.startswith("A post-incident review needs a summary"), invisible.text
        # A slash command's text is refused at the edge, before any parsing (its own wording).
        nul = await command(env, "/approvals", RM_2, f"review {request_id} config\x00 drift")
        assert "must not contain control characters (U+0000" in nul.text
        assert not nul.public
        assert (await stored(env, request_id)).reviewed_at is None
        async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
            kinds = [e.kind for e in await uow.events.list_for(request_id)]
        assert "review.recorded" not in kinds


# --- GitHub and GitLab ----------------------------------------------------------------------

GITHUB_SECRET = "gh-clean-text-secret"
GITLAB_TOKEN = "gl-clean-text-token"


def _provider_policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    policy["environments"]["production"]["require_change_ticket"] = False
    return policy


@dataclass
class Providers:
    env: Env
    github: FakeGitHub

    async def post(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        quorum = self.env.quorum
        assert quorum.http is not None
        async with quorum.http.post(f"{quorum.url}{path}", data=raw, headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@pytest.fixture
async def providers(db_url: str) -> AsyncIterator[Providers]:
    key = AppKey.generate()
    async with FakeGitHub(key.public_pem) as github:
        settings = {
            "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_PRIVATE_KEY": key.private_pem,
            "GITHUB_API_URL": github.base_url,
            "GITLAB_WEBHOOK_TOKEN": GITLAB_TOKEN,
        }
        async with running_env(db_url, policy=_provider_policy(), extra_settings=settings) as env:
            yield Providers(env, github)


async def test_github_and_gitlab_deliveries_with_control_characters_are_400(
    providers: Providers,
) -> None:
    payload = protection_rule(providers.github.callback_url(), with_sha_ref=True)
    payload["ref"] = "main\x00<!channel>"
    raw = json.dumps(payload).encode()
    status, data = await providers.post(
        "/webhooks/github",
        raw,
        headers_for(GITHUB_SECRET, raw, delivery="d-1", event="deployment_protection_rule"),
    )
    assert status == 400, data
    assert data["fields"] == [{"field": "ref", "message": f"{NUL_AT}4)"}]

    hook: dict[str, Any] = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
    hook.update(status="blocked", environment="production", commit_title="Fix\x00 checkout")
    hook["project"]["path_with_namespace"] = "acme/storefront"
    status, data = await providers.post(
        "/webhooks/gitlab",
        json.dumps(hook).encode(),
        {
            "X-Gitlab-Token": GITLAB_TOKEN,
            "X-Gitlab-Event": "Deployment Hook",
            "Content-Type": "application/json",
        },
    )
    assert status == 400, data
    assert data["fields"] == [{"field": "commit_title", "message": f"{NUL_AT}3)"}]
    await _no_request(providers.env)
    assert providers.github.reports() == []
