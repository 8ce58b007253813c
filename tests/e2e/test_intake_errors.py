"""Bad input at both HTTP edges gets a precise 4xx and changes nothing; never a 500."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
import yaml

from handlers.action_ids import ActionId
from tests.e2e.harness import API_TOKEN, Env, block_action, body_for, running_env
from tests.paths import REPO


def _openapi_validator(name: str) -> jsonschema.protocols.Validator:
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    cls = jsonschema.validators.validator_for(
        {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    )
    return cls(schema)  # type: ignore[no-any-return]


async def _nothing_recorded(env: Env) -> None:
    async with env.quorum.deps.database.unit_of_work() as uow:
        assert list(await uow.requests.list_open()) == []
    assert env.slack.calls_to("chat.postMessage") == []


async def test_accepted_and_status_bodies_match_the_openapi_file(env: Env) -> None:
    status, accepted = await env.quorum.webhook(body_for(callback_url=env.pipeline.url))
    assert status == 202
    _openapi_validator("Accepted").validate(accepted)
    assert accepted["status_url"].endswith(f"/api/v1/requests/{accepted['id']}")
    await env.card_of(accepted["id"])
    status, data = await env.quorum.status(accepted["id"])
    assert status == 200
    _openapi_validator("RequestStatus").validate(data)


async def test_bad_signature_is_401_and_records_nothing(env: Env) -> None:
    status, data = await env.quorum.webhook(body_for(), secret="whsec_c2Vjb25kLXNlY3JldA==")
    assert status == 401
    assert "signature" in data["error"]
    stale = datetime.now(UTC) - timedelta(minutes=6)
    status, _ = await env.quorum.webhook(body_for(), at=stale)
    assert status == 401
    await _nothing_recorded(env)


async def test_malformed_json_is_400_naming_the_field(env: Env) -> None:
    status, data = await env.quorum.webhook(b'{"service": "storefront",')
    assert status == 400
    assert data["fields"][0]["field"] == "body"
    status, data = await env.quorum.webhook(
        {"service": "storefront", "risk": "extreme", "links": [{"text": "x", "url": "ftp://x"}]}
    )
    assert status == 400
    fields = {f["field"] for f in data["fields"]}
    assert {"environment", "risk", "links[0].url"} <= fields
    await _nothing_recorded(env)


async def test_unknown_environment_and_missing_ticket_are_422(env: Env) -> None:
    status, data = await env.quorum.webhook(body_for(environment="prod"))
    assert status == 422
    assert "production" in data["error"]
    assert data["known"] == ["production", "staging"]
    status, data = await env.quorum.webhook(body_for(change_ticket=None))
    assert status == 422
    assert "change ticket" in data["error"]
    await _nothing_recorded(env)


async def test_body_over_one_mebibyte_is_413(env: Env) -> None:
    status, _ = await env.quorum.webhook(body_for(description="x" * (1024 * 1024 + 10)))
    assert status == 413
    await _nothing_recorded(env)


async def test_unknown_service_is_routed_to_the_default_channel_with_a_warning(env: Env) -> None:
    status, data = await env.quorum.webhook(
        body_for(service="ledger", environment="staging", change_ticket=None)
    )
    assert status == 202
    card = await env.card_of(data["id"])
    assert card["channel"] == "C0DEPLOYS"
    assert "No owner" in json.dumps(card["blocks"])


async def test_unknown_service_is_rejected_when_the_policy_says_so(db_url: str) -> None:
    from tests.e2e.harness import POLICY

    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    policy["defaults"]["unknown_service"] = "reject"
    async with running_env(db_url, policy=policy) as env:
        status, data = await env.quorum.webhook(body_for(service="ledger"))
        assert status == 422
        assert "ledger" in data["error"]
        await _nothing_recorded(env)


async def test_repository_is_matched_against_repo_globs(env: Env) -> None:
    body = body_for(repository="acme/storefront-web", callback_url=env.pipeline.url)
    del body["service"]
    status, data = await env.quorum.webhook(body)
    assert status == 202
    card = await env.card_of(data["id"])
    assert card["channel"] == "C0WEB"


async def test_status_api_needs_the_bearer_token(env: Env) -> None:
    request_id = await env.open()
    status, _ = await env.quorum.status(request_id, token="wrong")
    assert status == 401
    status, _ = await env.quorum.status("req_missing", token=API_TOKEN)
    assert status == 404


@pytest.mark.parametrize("case", ["bad-signature", "stale", "unsigned"])
async def test_slack_requests_with_bad_signatures_get_401(env: Env, case: str) -> None:
    request_id = await env.open()
    raw = (
        "payload=" + json.dumps(block_action(ActionId.approve, "U0WEB2", request_id, "C0WEB"))
    ).encode()
    if case == "bad-signature":
        status, _ = await env.quorum.slack_raw(raw, secret="not-the-secret")
    elif case == "stale":
        status, _ = await env.quorum.slack_raw(raw, ts=int(time.time()) - 600)
    else:
        assert env.quorum.http is not None
        async with env.quorum.http.post(f"{env.quorum.url}/slack/events", data=raw) as resp:
            status = resp.status
    assert status == 401
    _, data = await env.quorum.status(request_id)
    assert data["votes"] == []


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"payload=%7Bnot-json", "application/x-www-form-urlencoded"),
        (b"payload=%5B%5D", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"hello=world", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
    ],
)
async def test_signed_but_malformed_slack_bodies_get_400(
    env: Env, raw: bytes, content_type: str
) -> None:
    status, text = await env.quorum.slack_raw(raw, content_type=content_type)
    assert status == 400, text


async def test_slack_429_is_waited_out(env: Env) -> None:
    env.slack.fail_next("chat.postMessage", status=429, retry_after=0)
    status, data = await env.quorum.webhook(body_for(callback_url=env.pipeline.url))
    assert status == 202
    card = await env.card_of(data["id"])
    assert card["channel"] == "C0WEB"
    attempts = env.slack.calls_to("chat.postMessage")
    assert [c.status for c in attempts][:2] == [429, 200]
    assert len([c for c in attempts if c.ok]) == 1
