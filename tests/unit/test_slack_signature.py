"""The /slack/events guard: Slack's v0 signature (fixture vector) and body sanity checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from handlers.slack_events import malformed, signature_valid
from tests.paths import FIXTURES

VECTOR = json.loads((FIXTURES / "slack" / "signing_vector.json").read_text())
AT = datetime.fromtimestamp(int(VECTOR["timestamp"]), UTC)


def _check(
    body: bytes = VECTOR["body"].encode(),
    *,
    now: datetime = AT,
    signature: str | None = VECTOR["expected_signature"],
    timestamp: str | None = VECTOR["timestamp"],
) -> bool:
    return signature_valid(body, timestamp, signature, VECTOR["signing_secret"], now)


def test_the_published_vector_verifies() -> None:
    assert _check()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body": b"token=tampered"},
        {"now": AT + timedelta(seconds=301)},
        {"now": AT - timedelta(seconds=301)},
        {"signature": None},
        {"timestamp": None},
        {"timestamp": "yesterday"},
        {"signature": "v0=" + "0" * 64},
        {"body": b"\xff\xfe"},
    ],
    ids=[
        "tampered",
        "stale",
        "future",
        "no-signature",
        "no-timestamp",
        "bad-timestamp",
        "wrong",
        "not-utf8",
    ],
)
def test_anything_else_fails(kwargs: dict[str, object]) -> None:
    assert not _check(**kwargs)  # type: ignore[arg-type]


def test_within_the_window_passes() -> None:
    assert _check(now=AT + timedelta(seconds=299))


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        (VECTOR["body"].encode(), "application/x-www-form-urlencoded", None),
        (b'payload={"type":"block_actions"}', "application/x-www-form-urlencoded", None),
        (b'{"type":"url_verification"}', "application/json", None),
        (b"payload=[1]", "application/x-www-form-urlencoded", "no type"),
        (b"payload={", "application/x-www-form-urlencoded", "not valid JSON"),
        (b"[]", "application/json", "not a JSON object"),
        (b"a=b", "application/x-www-form-urlencoded", "neither"),
        (b"\xff", "application/json", "not UTF-8"),
    ],
)
def test_malformed(body: bytes, content_type: str, problem: str | None) -> None:
    result = malformed(body, content_type)
    if problem is None:
        assert result is None
    else:
        assert result is not None
        assert problem in result


async def test_bolts_own_verification_stays_on_with_the_app_clock() -> None:
    """Behind the guard, bolt still verifies the signature itself, on Quorum's clock."""
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    from handlers.slack_events import build_bolt_app
    from tests.fakes.slack_api import FakeSlack

    async with FakeSlack() as slack:  # bolt's authorization (auth.test) runs first
        bolt = build_bolt_app(
            AsyncWebClient(token=slack.token, base_url=slack.base_url),
            VECTOR["signing_secret"],
            lambda: AT,
        )

        async def status(headers: dict[str, str]) -> int:
            request = AsyncBoltRequest(body=VECTOR["body"], headers=headers)
            return (await bolt.async_dispatch(request)).status

        forged = {**VECTOR["headers"], "X-Slack-Signature": "v0=" + "0" * 64}
        assert await status(forged) == 401
        assert await status(VECTOR["headers"]) != 401  # the vector's time is "now" for the app
