"""Prometheus metrics: `GET /metrics` (HTTP traffic by route and status, ack latency, backlog).

One registry per application (not the process-global one), so several apps in one process
(tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from bot.services.status import Backlog

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GetBacklog = Callable[[], Awaitable[Backlog]]

# Slack wants an answer within 3 s; the interesting range is a few ms to a few hundred.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)


def register(app: web.Application, *, get_backlog: GetBacklog) -> None:
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "quorum_http_requests",
        "HTTP requests answered, by route and status.",
        ["route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "quorum_http_request_duration_seconds",
        "Time to answer (for /slack/events: the acknowledgement Slack waits for).",
        ["route"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    open_requests = Gauge(
        "quorum_open_requests", "Requests waiting for a decision.", registry=registry
    )
    callbacks = Gauge(
        "quorum_callbacks_pending", "Pipeline callbacks not yet delivered.", registry=registry
    )
    messages = Gauge(
        "quorum_slack_messages_pending", "Queued Slack messages not yet sent.", registry=registry
    )

    by_status: dict[tuple[str, int], Counter] = {}
    by_route: dict[str, Histogram] = {}

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            counted = by_status.get((name, status))
            if counted is None:  # the label lookup (locked) once per route and status
                counted = by_status[name, status] = requests.labels(name, str(status))
            timed = by_route.get(name)
            if timed is None:
                timed = by_route[name] = latency.labels(name)
            counted.inc()
            timed.observe(time.perf_counter() - started)

    async def handle_metrics(_: web.Request) -> web.Response:
        backlog = await get_backlog()
        open_requests.set(backlog.open_requests)
        callbacks.set(backlog.callbacks_pending)
        messages.set(backlog.slack_messages_pending)
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.middlewares.append(measure)
    app.router.add_get("/metrics", handle_metrics)
