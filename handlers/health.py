"""Liveness and readiness probes: `/healthz` (process up) and `/readyz` (database and policy).

`/readyz` also says how Slack is answering (`"slack": "ok"` or `"degraded"`, with since when and
the kind of failure): Quorum keeps serving while Slack is down (clicks are acked, cards catch up
later), so Slack is reported, not a gate; the database and policy are the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers.slack_health import SlackHealth

log = logging.getLogger(__name__)


def register(
    app: web.Application,
    *,
    ping_database: Callable[[], Awaitable[None]],
    policy_loaded: Callable[[], bool],
    slack: SlackHealth | None = None,
) -> None:
    async def handle_healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_readyz(_: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await ping_database()
            checks["database"] = "ok"
        except Exception as exc:  # any driver error means "not ready", and is logged once here
            log.warning("readiness: database unreachable: %s", type(exc).__name__)
            checks["database"] = "unreachable"
        checks["policy"] = "ok" if policy_loaded() else "not loaded"
        ready = all(value == "ok" for value in checks.values())
        body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
        if slack is not None:
            since = slack.degraded_since
            body["slack"] = "ok" if since is None else "degraded"
            if since is not None:
                body["slack_degraded_since"] = since.isoformat()
                body["slack_failure"] = slack.last_kind
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
