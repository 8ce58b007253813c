"""`POST /slack/events`: bolt's AsyncApp mounted as one route of our aiohttp app, behind a guard.

Bolt parses the body before it verifies the signature, so a malformed body would surface as a
500. The guard verifies the Slack signature (401) and parses the body (400) first, and hands bolt
the parsed request (`handlers/slack_request.py`); bolt then verifies the signature again (kept
on) and dispatches to the listeners.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.request_verification.async_request_verification import (
    AsyncRequestVerification,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from handlers.errors import json_error
from handlers.slack_request import parse_slack_body, parsed_bolt_request

log = logging.getLogger(__name__)


_TOLERANCE_SECONDS = 300  # Slack's replay window
_SLACK_KEYS = frozenset({"type", "command", "ssl_check"})  # what every Slack request body has
_NOT_SLACK = "body is not a Slack request"


def signature_valid(
    body: bytes, timestamp: str | None, signature: str | None, secret: str, now: datetime
) -> bool:
    """Slack's v0 signature over the raw bytes (any bytes: a non-UTF-8 body is not a crash)."""
    if not timestamp or not signature:
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - sent) > _TOLERANCE_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


class _ClockedRequestVerification(AsyncRequestVerification):
    """Bolt's own signature check, reading Quorum's clock instead of the wall clock (so a test
    or simulation on a fixed clock is verified like production)."""

    def __init__(self, signing_secret: str, now: Callable[[], datetime]) -> None:
        super().__init__(signing_secret)
        self._verifier = SignatureVerifier(signing_secret, clock=_VerifierClock(now))


class _VerifierClock(Clock):
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now().timestamp()


def build_bolt_app(
    client: AsyncWebClient, signing_secret: str, now: Callable[[], datetime]
) -> AsyncApp:
    """The bolt app. `process_before_response=True`: listeners run before the HTTP response is
    written, so an ack is sent only after our commit, and no 10 ms ack polling is involved.

    Bolt's request verification stays on, as bolt's own middleware class with Quorum's clock
    (registered with `use`, so it runs after bolt's built-in middleware; the guard in
    `register` has already verified the signature before bolt sees a request)."""
    bolt = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        request_verification_enabled=False,  # replaced by the clocked copy below
        raise_error_for_unhandled_request=False,
        ssl_check_enabled=True,
        url_verification_enabled=True,
    )
    bolt.use(_ClockedRequestVerification(signing_secret, now))
    return bolt


def malformed(body: bytes, content_type: str) -> str | None:
    """Why the body cannot be a Slack request, or None when it parses."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"body is not valid JSON: {exc.msg}"
        return None if isinstance(data, dict) else "body is not a JSON object"
    form = parse_qs(text, keep_blank_values=True)
    if "payload" in form:
        try:
            payload = json.loads(form["payload"][0])
        except json.JSONDecodeError as exc:
            return f"payload is not valid JSON: {exc.msg}"
        if not isinstance(payload, dict) or "type" not in payload:
            return "payload is not a Slack interaction (no type)"
        return None
    if "command" in form:
        return None
    return "body is neither an interaction payload nor a slash command"


def register(
    app: web.Application,
    *,
    bolt: AsyncApp,
    signing_secret: str,
    now: Callable[[], datetime],
) -> None:
    async def handle_slack_events(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "request body is larger than 1 MiB")
        if not signature_valid(
            body,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            signing_secret,
            now(),
        ):
            return json_error(401, "invalid or stale Slack signature")
        # A body that does not parse, or that is not a Slack request, is the sender's error
        # (400), never a 500. Parsed once, here, and handed to bolt parsed: `malformed` then
        # says precisely what is wrong.
        try:
            text = body.decode(request.charset or "utf-8")
            parsed = parse_slack_body(text, request.content_type)
        except Exception:  # any parse failure is the sender's: explained in the 400
            return json_error(400, malformed(body, request.content_type) or _NOT_SLACK)
        if not _SLACK_KEYS & parsed.keys():
            return json_error(400, malformed(body, request.content_type) or _NOT_SLACK)
        bolt_response = await bolt.async_dispatch(
            parsed_bolt_request(text, parsed, request.query_string, request.headers)
        )
        return await to_aiohttp_response(bolt_response)

    app.router.add_post("/slack/events", handle_slack_events)
