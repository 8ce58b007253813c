"""The guard's parse of a Slack body gives bolt exactly what bolt's own parse would, and the bolt
request it builds is the one bolt's aiohttp adapter builds (the signature check included)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier

from handlers.slack_request import (
    SlackBody,
    parse_slack_body,
    parsed_bolt_request,
    read_slack_body,
)
from tests.paths import FIXTURES

FORM = "application/x-www-form-urlencoded"


def _fixture(name: str) -> str:
    return (FIXTURES / "slack" / name).read_text()


def _bodies() -> list[tuple[str, str | None]]:
    interaction = json.loads(_fixture("block_actions.json"))
    submission = json.loads(_fixture("view_submission.json"))
    unicode_payload = {"type": "block_actions", "text": "Zürich → 東京 & a+b=c %41 ✓"}
    return [
        (urlencode({"payload": json.dumps(interaction)}), FORM),
        (urlencode({"payload": json.dumps(submission)}), FORM),
        (urlencode({"payload": json.dumps(unicode_payload)}), FORM),
        (urlencode({"payload": json.dumps(unicode_payload)}), None),
        (_fixture("slash_command.txt").strip(), FORM),
        ("command=%2Ffreeze&text=prod+2h+%22release+day%22&text=last&user_id=U1", FORM),
        ("ssl_check=1&token=abc", FORM),
        (json.dumps({"type": "url_verification", "challenge": "c"}), "application/json"),
        (json.dumps({"type": "url_verification", "challenge": "c"}), FORM),  # starts with {
        ("a=%zz&b=%E2%82&c&d=", FORM),  # bad escapes and blank values, as parse_qsl keeps them
        ("", FORM),
    ]


@pytest.mark.parametrize(("text", "content_type"), _bodies())
def test_the_parse_equals_bolts_own(text: str, content_type: str | None) -> None:
    assert parse_slack_body(text, content_type) == parse_body(text, content_type)


def test_a_form_that_only_mentions_payload_is_read_as_its_fields() -> None:
    # Bolt takes any form body whose text says "payload" for an interaction and reads {}: a
    # slash command whose text says "payload" would be lost. Only a `payload` field counts.
    text = urlencode({"command": "/freeze", "text": "production payload service down"})
    assert parse_body(text, FORM) == {}
    assert parse_slack_body(text, FORM) == {
        "command": "/freeze",
        "text": "production payload service down",
    }
    assert read_slack_body(text, FORM) == SlackBody(
        parse_slack_body(text, FORM), form=True, interaction=False
    )
    interaction = urlencode({"payload": _fixture("block_actions.json")})
    assert read_slack_body(interaction, FORM).interaction
    assert not read_slack_body(_fixture("view_submission.json"), "application/json").form


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        ("payload=%7Bnot+json", FORM),
        ("{not json", None),
        ("[1, 2]", "application/json"),
        ("payload=%5B1%5D", FORM),  # a payload that is JSON but not an object
    ],
)
def test_a_body_that_does_not_parse_raises_value_error(text: str, content_type: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_slack_body(text, content_type)


def _signed_headers(text: str, secret: str) -> CIMultiDictProxy[str]:
    timestamp = str(int(time.time()))
    base = f"v0:{timestamp}:{text}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return CIMultiDictProxy(
        CIMultiDict(
            {
                "Content-Type": FORM,
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": signature,
            }
        )
    )


def _as_bolt_builds_it(text: str, headers: CIMultiDictProxy[str]) -> AsyncBoltRequest:
    # What slack_bolt.adapter.aiohttp.to_bolt_request does with an aiohttp request.
    return AsyncBoltRequest(body=text, query="a=1", headers=headers)  # type: ignore[arg-type]


def _fields(request: AsyncBoltRequest) -> dict[str, Any]:
    return {
        "raw_body": request.raw_body,
        "body": request.body,
        "query": request.query,
        "headers": request.headers,
        "content_type": request.content_type,
        "context": dict(request.context),
        "mode": request.mode,
        "lazy_only": request.lazy_only,
    }


def test_the_bolt_request_is_the_one_bolts_adapter_builds_and_its_signature_verifies() -> None:
    text = urlencode({"payload": _fixture("block_actions.json")})
    headers = _signed_headers(text, "secret")
    ours = parsed_bolt_request(text, parse_slack_body(text, FORM), "a=1", headers)
    assert _fields(ours) == _fields(_as_bolt_builds_it(text, headers))
    assert ours.context["user_id"] == "W111"  # bolt's context is built from the parsed body
    verifier = SignatureVerifier("secret")
    timestamp = ours.headers["x-slack-request-timestamp"][0]
    signature = ours.headers["x-slack-signature"][0]
    assert verifier.is_valid(ours.raw_body, timestamp, signature)
    assert not SignatureVerifier("other").is_valid(ours.raw_body, timestamp, signature)
