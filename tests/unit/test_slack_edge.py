"""The Slack edge's typed payloads and its answer to a listener that fails, through signed HTTP
into the guard and a real bolt app (no Quorum services behind it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult

from bot.background import BackgroundTasks
from bot.ports import Announcer
from bot.services.voting import Voting
from handlers import slack_actions, slack_events
from handlers.action_ids import ActionId, BlockId, encode_button_value
from handlers.slack_payloads import BlockActions, Refusal, SlashCommand, ViewSubmission, check
from tests.paths import FIXTURES

SECRET = "unit-signing-secret-0123456789"


def _fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / "slack" / name).read_text())
    assert isinstance(data, dict)
    return data


def test_the_fixture_payloads_fit_their_models() -> None:
    click = check(_fixture("block_actions.json"), form=True, interaction=True)
    assert isinstance(click, BlockActions)
    assert (click.user.id, click.team.id, click.actions[0].value) == (
        "W111",
        "T111",
        "click_me_123",
    )
    assert click.container is not None
    assert click.container.message_ts == "111.222"
    submission = check(_fixture("view_submission.json"), form=True, interaction=True)
    assert isinstance(submission, ViewSubmission)
    assert submission.input_value("hspI", "maBWU") == "test"
    raw = (FIXTURES / "slack" / "slash_command.txt").read_text().strip()
    fields = dict(pair.split("=", 1) for pair in raw.split("&"))
    command = check(fields, form=True, interaction=False)
    assert isinstance(command, SlashCommand)
    assert command.user_id == "U2147483697"


def test_fields_slack_adds_are_allowed_and_kept() -> None:
    payload = {**_fixture("block_actions.json"), "new_field": {"nested": [1, 2]}}
    click = check(payload, form=True, interaction=True)
    assert isinstance(click, BlockActions)
    assert (click.model_extra or {})["new_field"] == {"nested": [1, 2]}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "block_actions"}, "team"),
        ({**_fixture("block_actions.json"), "user": {"id": None}}, "user.id"),
        ({**_fixture("block_actions.json"), "actions": [{"value": "x"}]}, "actions.0.action_id"),
    ],
)
def test_a_payload_that_does_not_fit_names_the_field(payload: dict[str, Any], field: str) -> None:
    refused = check(payload, form=True, interaction=True)
    assert isinstance(refused, Refusal)
    assert refused.kind == "interaction"
    assert field in [f["field"] for f in refused.fields]


class _BrokenVoting:
    async def cast(self, command: object) -> object:
        raise RuntimeError(f"boom {SECRET}")  # a secret in the error must not reach the log line


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T111", bot_token="xoxb-unit")

    bolt = AsyncApp(signing_secret=SECRET, authorize=authorize, process_before_response=True)
    slack_actions.register(
        bolt,
        voting=cast(Voting, _BrokenVoting()),
        announcer=cast(Announcer, object()),
        background=BackgroundTasks(),
    )
    app = web.Application()
    slack_events.register(app, bolt=bolt, signing_secret=SECRET, now=lambda: datetime.now(UTC))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_a_failing_listener_is_logged_once_and_answered_without_a_500(
    client: TestClient[web.Request, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    payload = _fixture("block_actions.json")
    payload["actions"][0].update(
        action_id=ActionId.approve.value,
        block_id=BlockId.actions.value,
        value=encode_button_value("req_1"),
    )
    raw = urlencode({"payload": json.dumps(payload)})
    stamp = str(int(time.time()))
    signature = (
        "v0=" + hmac.new(SECRET.encode(), f"v0:{stamp}:{raw}".encode(), hashlib.sha256).hexdigest()
    )
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }

    with caplog.at_level(logging.INFO):
        response = await client.post("/slack/events", data=raw, headers=headers)
        body = await response.json()

    assert response.status == 200
    assert body["text"].startswith("Quorum could not complete this (correlation id ")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    cid = body["text"].split("correlation id ")[1].rstrip(").")
    assert cid in errors[0].getMessage()
    assert SECRET not in errors[0].getMessage()
