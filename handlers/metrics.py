"""Prometheus metrics: `GET /metrics` (HTTP traffic by route and status, ack latency, backlog,
Slack Web API failures by method and kind).

One registry per application (not the process-global one), so several apps in one process
(tests) do not collide.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from bot.services.status import Backlog
from handlers.connection_limits import ConnectionCollector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GetBacklog = Callable[[], Awaitable[Backlog]]
SlackFailures = Callable[[], Mapping[tuple[str, str], int]]

# Slack wants an answer within 3 s; the interesting range is a few ms to a few hundred.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)


class _SlackFailureCounter(Collector):
    """`quorum_slack_api_failures_total{method, kind}`, read from the counts the Slack client
    keeps (kind: connection, server_error, rate_limited, api_error)."""

    def __init__(self, counts: SlackFailures) -> None:
        self._counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for (method, kind), count in sorted(self._counts().items()):
            family.add_metric([method, kind], count)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "quorum_slack_api_failures",
            "Slack Web API calls that failed, by method and kind.",
            labels=["method", "kind"],
        )


def register(
    app: web.Application, *, get_backlog: GetBacklog, slack_failures: SlackFailures | None = None
) -> None:
    registry = CollectorRegistry(auto_describe=True)
    if slack_failures is not None:
        registry.register(_SlackFailureCounter(slack_failures))
    registry.register(ConnectionCollector(app))  # filled when a guard serves it (bot/serving.py)
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
        except asyncio.CancelledError:  # the client left mid-body (handlers/connection_limits)
            status = 499
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
