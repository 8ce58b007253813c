"""`POST /webhooks/{source}`: a pipeline asks for permission to deploy.

Thin: the adapter verifies and parses (and, when it must ask its provider who the requester is,
resolves them), `open_request` routes and records, this maps the outcome to HTTP. Input never
produces a 500: every refusal has its status and a JSON reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from bot.pipelines.base import (
    Ignored,
    InboundRequest,
    InboundUpdate,
    InvalidPayload,
    PipelineAdapter,
    ResolvesRequester,
    SignatureError,
)
from bot.pipelines.egress import UrlRefused
from bot.services.errors import ServiceError
from bot.services.intake import Opened
from bot.services.updates import Applied
from handlers.errors import correlation_id, json_error

log = logging.getLogger(__name__)

OpenRequest = Callable[[InboundRequest], Awaitable[Opened]]
ApplyUpdate = Callable[[InboundUpdate], Awaitable[Applied]]


def register(
    app: web.Application,
    *,
    adapters: Mapping[str, PipelineAdapter],
    open_request: OpenRequest,
    public_url: str,
    apply_update: ApplyUpdate | None = None,
) -> None:
    async def handle_pipeline_webhook(request: web.Request) -> web.Response:
        adapter = adapters.get(request.match_info["source"])
        if adapter is None:
            return json_error(404, f"no pipeline adapter {request.match_info['source']!r}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "request body is larger than 1 MiB")
        try:
            inbound = adapter.parse(body, request.headers)
        except SignatureError as exc:
            log.info("webhook %s refused: %s", adapter.source, exc.reason)
            return json_error(401, f"signature verification failed: {exc.reason}")
        except InvalidPayload as exc:
            return json_error(400, "invalid request body", fields=[e.as_dict() for e in exc.errors])
        except UrlRefused as exc:  # a URL Quorum may not call (egress policy, JENKINS_URL)
            fields = [e.as_dict() for e in exc.errors]
            return json_error(422, "refused: a URL in the body may not be called", fields=fields)
        except Ignored as exc:
            log.info("webhook %s ignored: %s", adapter.source, exc.reason)
            if exc.status == 204:
                return web.Response(status=204)
            return web.json_response({"ignored": exc.reason}, status=exc.status)
        try:
            if isinstance(inbound, InboundUpdate):
                return _applied(await _apply(apply_update, inbound))
            if isinstance(adapter, ResolvesRequester):
                inbound = await adapter.resolve_requester(inbound)
            opened = await open_request(inbound)
        except ServiceError as exc:
            return json_error(exc.status, exc.message, **exc.details)
        except Exception:
            cid = correlation_id()
            log.exception("webhook %s failed [%s]", adapter.source, cid)
            return json_error(500, f"internal error (correlation id {cid})")
        return web.json_response(
            {
                "id": opened.request_id,
                "state": opened.state,
                "status_url": f"{public_url}/api/v1/requests/{opened.request_id}",
            },
            status=202 if opened.created else 200,
        )

    app.router.add_post("/webhooks/{source}", handle_pipeline_webhook)


async def _apply(apply_update: ApplyUpdate | None, update: InboundUpdate) -> Applied:
    if apply_update is None:
        return Applied(request_id=None, state=None)
    return await apply_update(update)


def _applied(applied: Applied) -> web.Response:
    """A provider-side update: 200 either way, since the provider must not retry it."""
    if applied.request_id is None:
        return web.json_response({"ignored": "untracked deployment"}, status=200)
    return web.json_response(
        {"id": applied.request_id, "state": applied.state, "closed": applied.closed}, status=200
    )
