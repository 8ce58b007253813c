"""Liveness and readiness probes: `/healthz` (process up) and `/readyz` (database and policy)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


def register(
    app: web.Application,
    *,
    ping_database: Callable[[], Awaitable[None]],
    policy_loaded: Callable[[], bool],
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
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
