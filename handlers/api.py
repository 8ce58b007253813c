"""`GET /api/v1/requests/{id}`: request status for pipelines that poll (bearer QUORUM_API_TOKEN);
`GET /api/v1/keys`: the public keys callbacks are signed with (public, no token)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from bot.domain.model import RecordedEvent
from bot.pipelines.base import iso_utc
from bot.pipelines.callback_keys import PublicKeyInfo
from bot.services.errors import NotFound
from bot.services.ids import looks_like_id
from bot.services.status import RequestStatus
from handlers.errors import json_error

GetStatus = Callable[[str], Awaitable[RequestStatus]]
GetTrail = Callable[[str], Awaitable[Sequence[RecordedEvent]]]


def register(
    app: web.Application,
    *,
    api_token: str | None,
    get_status: GetStatus,
    get_trail: GetTrail,
    callback_keys: Sequence[PublicKeyInfo] = (),
) -> None:
    keys_document = render_keys(callback_keys)

    async def handle_keys(_request: web.Request) -> web.Response:
        # Public keys are public: receivers fetch them without a token (and should pin them).
        return web.json_response(keys_document, headers={"Cache-Control": "max-age=300"})

    async def handle_request_status(request: web.Request) -> web.Response:
        if not _authorized(request, api_token):
            return _unauthorized()
        request_id = request.match_info["request_id"]
        if not looks_like_id(request_id):  # never looked up (PostgreSQL refuses NUL)
            return _no_such(request_id)
        try:
            status = await get_status(request_id)
        except NotFound as exc:
            return json_error(404, exc.message)
        return web.json_response(render_status(status))

    async def handle_request_events(request: web.Request) -> web.Response:
        if not _authorized(request, api_token):
            return _unauthorized()
        request_id = request.match_info["request_id"]
        if not looks_like_id(request_id):  # never looked up (PostgreSQL refuses NUL)
            return _no_such(request_id)
        try:
            trail = await get_trail(request_id)
        except NotFound as exc:
            return json_error(404, exc.message)
        return web.json_response({"events": [render_event(entry) for entry in trail]})

    app.router.add_get("/api/v1/requests/{request_id}", handle_request_status)
    app.router.add_get("/api/v1/requests/{request_id}/events", handle_request_events)
    app.router.add_get("/api/v1/keys", handle_keys)


def render_keys(keys: Sequence[PublicKeyInfo]) -> dict[str, Any]:
    """The JSON of docs/openapi.yaml `CallbackKeys`: empty when callbacks carry only `v1`
    (shared-secret) signatures."""
    return {
        "keys": [
            {
                "key_id": key.key_id,
                "algorithm": key.algorithm,
                "signature_version": key.signature_version,
                "public_key": key.public_key,
                "created": iso_utc(key.created),
            }
            for key in keys
        ]
    }


def _no_such(request_id: str) -> web.Response:
    return json_error(404, f"no request {request_id[:80]!r}: not a Quorum request id")


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="quorum"'},
    )


def _authorized(request: web.Request, api_token: str | None) -> bool:
    if not api_token:
        return False  # no token configured: the API is closed
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        # a header is decoded with surrogateescape: non-UTF-8 bytes come back as bytes
        token.strip().encode("utf-8", "surrogateescape"),
        api_token.encode(),
    )


def _time(value: Any) -> str | None:
    return iso_utc(value) if value is not None else None


def render_event(entry: RecordedEvent) -> dict[str, Any]:
    """One audit entry as docs/openapi.yaml `AuditEvent` describes it."""
    event = entry.event
    return {
        "seq": entry.seq,
        "kind": event.kind,
        "at": iso_utc(event.at),
        "actor": event.actor,
        "data": dict(event.data),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def render_status(status: RequestStatus) -> dict[str, Any]:
    """The JSON of docs/openapi.yaml `RequestStatus`."""
    req = status.request
    delivery = status.delivery
    return {
        "id": req.id,
        "state": req.state.value,
        "service": req.service,
        "environment": req.environment,
        "risk": req.risk.value,
        "source": req.source,
        "reason": req.decision_reason,
        "break_glass": req.break_glass,
        "rules": [
            {
                "name": p.rule.name,
                "team": p.rule.team,
                "approvals": p.rule.approvals,
                "widened_by": list(p.rule.widened_by),
                "approved_by": list(p.approvers),
                "met": p.met,
            }
            for p in status.tally.rules
        ],
        "waiting_on": list(status.tally.waiting_on) if req.state.is_open else [],
        "votes": [
            {
                "user": vote.clicked_by,
                "vote": vote.kind.value,
                "reason": vote.reason,
                "at": iso_utc(vote.cast_at),
                "on_behalf_of": vote.voter if vote.clicked_by != vote.voter else None,
            }
            for vote in status.votes
        ],
        "callback": None
        if delivery is None
        else {
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
            "next_attempt_at": _time(delivery.next_attempt_at)
            if delivery.state.value == "pending"
            else None,
            "delivered_at": _time(delivery.delivered_at),
        },
        "created_at": iso_utc(req.created_at),
        "decided_at": _time(req.decided_at),
        "card": {"channel": req.channel, "ts": req.message_ts} if req.message_ts else None,
        "escalation_level": req.escalation_level,
        "next_timer": status.next_timer,
        "next_timer_at": _time(status.next_timer_at),
    }
