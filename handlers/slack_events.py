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
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.request_verification.async_request_verification import (
    AsyncRequestVerification,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import mrkdwn
from bot.domain.mrkdwn import md
from bot.domain.people import Installation
from bot.ports import SlackAnswer
from bot.services.replays import BUSY, SlackReplays, replay_key
from handlers.errors import correlation_id, json_error
from handlers.slack_payloads import PAYLOAD_KEY, Payload, Refusal, check
from handlers.slack_request import parsed_bolt_request, read_slack_body

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
    # Headers are decoded with surrogateescape: non-UTF-8 bytes come back as bytes, not an error.
    base = b"v0:" + timestamp.encode("utf-8", "surrogateescape") + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


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


class _LearntAuthorize(AsyncAuthorize):
    """Bolt's authorization from the installation Quorum learnt at start (auth.test, retried in
    the background), never a Slack call per request: bolt's default for a single workspace
    calls auth.test before dispatching, so with Slack unreachable every request answered 500.
    Until the installation is learnt, the request's own team stands in; the listeners check
    the click against the installation themselves and refuse it while it is unknown."""

    def __init__(self, token: str, known: Callable[[], Installation | None]) -> None:
        self._token = token
        self._known = known

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        learnt = self._known()
        if learnt is None:
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id,
                user_id=user_id,
                bot_token=self._token,
            )
        return AuthorizeResult(
            enterprise_id=learnt.enterprise_id,
            team_id=learnt.team_id,
            user_id=user_id,
            bot_user_id=learnt.bot_user_id,
            bot_token=self._token,
        )


def build_bolt_app(
    client: AsyncWebClient,
    signing_secret: str,
    now: Callable[[], datetime],
    installation: Callable[[], Installation | None] = lambda: None,
) -> AsyncApp:
    """The bolt app. `process_before_response=True`: listeners run before the HTTP response is
    written, so an ack is sent only after our commit, and no 10 ms ack polling is involved.

    Authorization never calls Slack: it uses the `installation` Quorum learnt at start
    (`_LearntAuthorize`). Bolt's request verification stays on, as bolt's own middleware class
    with Quorum's clock (registered with `use`, so it runs after bolt's built-in middleware;
    the guard in `register` has already verified the signature before bolt sees a request)."""
    if client.token is None:
        raise ValueError("the bolt app needs the bot token")
    bolt = AsyncApp(
        client=client,
        authorize=_LearntAuthorize(client.token, installation),
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
        return _malformed(body, content_type)
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits, 10**5 brackets
        return f"body cannot be read: {type(exc).__name__}"


def _malformed(body: bytes, content_type: str) -> str | None:
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
    replays: Callable[[], SlackReplays | None] | None = None,
) -> None:
    """The guard in front of bolt: signature (401), parse (400), typed payload (400 or an
    ephemeral, `handlers/slack_payloads.py`), replay (the first answer, `bot/services/replays.py`),
    then bolt. `replays` None: replays are not refused (unit tests of the edge alone)."""

    async def handle_slack_events(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "request body is larger than 1 MiB")
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not signature_valid(body, timestamp, signature, signing_secret, now()):
            return json_error(401, "invalid or stale Slack signature")
        assert timestamp is not None  # signature_valid checked both
        assert signature is not None
        # A body that does not parse, or that is not a Slack request, is the sender's error
        # (400), never a 500. Parsed once, here, and handed to bolt parsed: `malformed` then
        # says precisely what is wrong.
        try:
            text = body.decode(request.charset or "utf-8")
            parsed = read_slack_body(text, request.content_type)
        except Exception:  # any parse failure is the sender's: explained in the 400
            return json_error(400, malformed(body, request.content_type) or _NOT_SLACK)
        if not _SLACK_KEYS & parsed.fields.keys():
            return json_error(400, malformed(body, request.content_type) or _NOT_SLACK)
        try:
            payload = check(parsed.fields, form=parsed.form, interaction=parsed.interaction)
        except Exception as exc:  # a body no model can even be tried on: the sender's
            return json_error(400, f"body is not a Slack request ({type(exc).__name__})")
        if isinstance(payload, Refusal):
            return _refused(payload, parsed.form)
        guard = replays() if replays is not None else None
        if guard is None:
            return _web(await _dispatch(bolt, text, parsed.fields, payload, request))
        key = replay_key(timestamp, signature)
        try:
            first = await guard.take(key)
        except Exception as exc:
            cid = correlation_id()
            log.warning("could not take a Slack request [%s]: %s", cid, type(exc).__name__)
            return json_error(503, "Quorum's storage is unavailable", correlation_id=cid)
        if first is BUSY:
            return json_error(409, "this Slack request is already being processed")
        if first is not None:
            return _replayed(first)
        answer = SlackAnswer(500, "application/json", _INTERNAL)
        try:
            answer = await _dispatch(bolt, text, parsed.fields, payload, request)
        finally:
            guard.answered(key, answer)
        return _web(answer)

    app.router.add_post("/slack/events", handle_slack_events)


_INTERNAL = '{"error": "internal error"}'


async def _dispatch(
    bolt: AsyncApp, text: str, fields: dict[str, Any], payload: Payload, request: web.Request
) -> SlackAnswer:
    """Bolt's answer to the request (with the validated payload in its context)."""
    try:
        bolt_request = parsed_bolt_request(
            text, fields, request.query_string, request.headers, {PAYLOAD_KEY: payload}
        )
    except Exception as exc:  # bolt reads who and where (user, team, channel, enterprise, and
        # the same inside `event`) from any body; one of them has a shape Slack never sends
        cid = correlation_id()
        log.info("refused a Slack request [%s]: unreadable ids (%s)", cid, type(exc).__name__)
        message = "the body's user, team, channel or enterprise is not what Slack sends"
        return SlackAnswer(
            400, "application/json", json.dumps({"error": message, "correlation_id": cid})
        )
    try:
        response = await bolt.async_dispatch(bolt_request)
    except Exception as exc:  # bolt's own failure: logged once, never a traceback per request
        cid = correlation_id()
        log.error("slack dispatch failed [%s]: %s", cid, type(exc).__name__)
        return SlackAnswer(
            500, "application/json", json.dumps({"error": "internal error", "correlation_id": cid})
        )
    content_type = next(iter(response.headers.get("content-type", [])), None)
    return SlackAnswer(response.status, content_type, response.body or "")


def _web(answer: SlackAnswer) -> web.Response:
    response = web.Response(status=answer.status, text=answer.body)
    if answer.content_type:
        response.headers["Content-Type"] = answer.content_type
    return response


def _replayed(answer: SlackAnswer) -> web.Response:
    response = _web(answer)
    response.headers["X-Quorum-Replay"] = "1"  # the first answer, given again; nothing ran
    return response


def _refused(refusal: Refusal, form: bool) -> web.Response:
    """A signed body that does not fit its model: 400 naming the fields, except a slash
    command, whose sender reads the answer: an ephemeral naming the field, with a correlation
    id to find the log line."""
    cid = correlation_id()
    log.info(
        "refused a Slack %s [%s]: %s (%s)",
        refusal.kind,
        cid,
        refusal.message,
        ", ".join(f["field"] for f in refusal.fields),
    )
    if refusal.kind == "command" and form:
        # Escaped (bot/domain/mrkdwn.py): a field's message may quote what was sent.
        where = mrkdwn.join(
            ", ", (md("{} {}", mrkdwn.code(f["field"]), f["message"]) for f in refusal.fields)
        )
        return web.json_response(
            {
                "response_type": "ephemeral",
                "text": md(
                    "Quorum could not read this command (correlation id {}): {}.", cid, where
                ),
            }
        )
    return json_error(400, refusal.message, fields=refusal.fields, correlation_id=cid)
