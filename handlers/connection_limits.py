"""Limits on the connections Quorum serves: slow, idle and broken clients, a descriptor budget.

One `ConnectionGuard` per server keeps each open connection in at most one of three queues, each
in the order its connections entered it, so the front is always the next to expire:

- heads: waiting for (the rest of) a request head, closed `header_timeout` after it began (a new
  connection's head begins when it connects, a kept-alive one's with its first byte);
- idle: kept alive between requests, closed after `keepalive_timeout`;
- bodies: the head arrived, the body has not; cut off `body_timeout` after the head.

A connection being answered is in none of them. A tick closes what expired at the fronts: O(1)
per connection, no timer of its own. Past `max_open` open connections (the descriptor budget),
a new connection closes the oldest idle one, else the oldest slow one, else is closed itself, so
a crowd of slow clients cannot keep a signed Slack click from being served. A client address
that already has `max_per_client` connections open has its next one closed at once.

A connection closed or lost while its body is incomplete has its request's task cancelled: the
handler never saw that body, and the aborted upload is counted instead of logged as a traceback.
Malformed requests still get aiohttp's 400; they are counted, not logged with a traceback.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_Queue = OrderedDict["GuardedHandler", float]  # connection -> loop time it entered the queue


class Closed(enum.StrEnum):
    """Why Quorum closed a connection (the `reason` label of quorum_connections_closed)."""

    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    IDLE = "idle"
    PER_CLIENT = "per_client_limit"
    BUDGET = "descriptor_budget"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Seconds and counts; 0 turns a count off."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_per_client: int = 64
    max_open: int = 0  # the descriptor budget (bot/serving.py computes it from RLIMIT_NOFILE)

    @property
    def tick(self) -> float:
        """How often the queues' fronts are checked: a quarter of the shortest timeout."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout)
        return min(1.0, max(0.02, shortest / 4))


@dataclass(slots=True)
class ConnectionStats:
    """Plain counters (an increment costs nothing); exported by `ConnectionCollector`."""

    open: int = 0
    closed: Counter[Closed] = field(default_factory=Counter)
    aborted_uploads: int = 0
    malformed_requests: int = 0
    accept_errors: int = 0


CONNECTION_STATS: web.AppKey[ConnectionStats] = web.AppKey("connection_stats", ConnectionStats)


class ConnectionGuard:
    """The bookkeeping of one server's connections (see the module's docstring)."""

    def __init__(self, limits: ConnectionLimits, stats: ConnectionStats | None = None) -> None:
        self.limits = limits
        self.stats = stats if stats is not None else ConnectionStats()
        self._heads: _Queue = OrderedDict()
        self._idle: _Queue = OrderedDict()
        self._bodies: _Queue = OrderedDict()
        self._clients: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticking: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ticking = loop.call_later(self.limits.tick, self._tick)

    def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None

    def shed(self, count: int) -> int:
        """Close up to `count` of the oldest idle or slow connections (no descriptor was left
        for an accept); how many were closed."""
        closed = 0
        while closed < count and (victim := self._oldest()) is not None:
            self._close(victim, Closed.BUDGET)
            closed += 1
        return closed

    def close_waiting(self) -> None:
        """Shutting down: close every connection that is not being answered (one waiting for
        its body would otherwise hold the shutdown for the whole shutdown timeout)."""
        for queue in (self._heads, self._idle, self._bodies):
            while queue:
                conn = next(iter(queue))
                self._leave(conn)
                conn.closing_for = conn.closing_for or Closed.IDLE  # ours, not an abort
                conn.force_close()

    # --- events from GuardedHandler ---------------------------------------------------------

    def opened(self, conn: GuardedHandler) -> None:
        self.stats.open += 1
        conn.counted = True
        same_client = self._clients.get(conn.client, 0) + 1
        self._clients[conn.client] = same_client
        cap = self.limits.max_per_client
        if cap and same_client > cap:
            self._close(conn, Closed.PER_CLIENT)
            return
        budget = self.limits.max_open
        if budget and self.stats.open > budget:
            victim = self._oldest()
            if victim is None:  # every other connection is being answered
                self._close(conn, Closed.BUDGET)
                return
            self._close(victim, Closed.BUDGET)
        self._enter(conn, self._heads)

    def head_parsed(self, conn: GuardedHandler, body: StreamReader | None) -> None:
        """A request head arrived; `body` is its payload if that has not all arrived yet."""
        if body is None:
            self._leave(conn)
        else:
            conn.body = body
            self._enter(conn, self._bodies)

    def data_arrived(self, conn: GuardedHandler) -> None:
        """More bytes, no new head: a kept-alive connection's next head begins, or a body grows."""
        if conn.queue is self._idle:
            self._enter(conn, self._heads)
        elif conn.queue is self._bodies and conn.body is not None and conn.body.is_eof():
            conn.body = None
            self._leave(conn)
            if conn.in_flight <= 0:  # answered before its body was read (aiohttp lingers)
                self._enter(conn, self._idle)

    def answered(self, conn: GuardedHandler) -> None:
        if conn.in_flight <= 0 and conn.body is None and conn.closing_for is None:
            self._enter(conn, self._idle)

    def lost(self, conn: GuardedHandler) -> bool:
        """The connection is gone; True if its request body was incomplete (cancel its task)."""
        if not conn.counted:
            return False
        conn.counted = False
        self._leave(conn)
        self.stats.open -= 1
        left = self._clients.get(conn.client, 1) - 1
        if left > 0:
            self._clients[conn.client] = left
        else:
            self._clients.pop(conn.client, None)
        mid_body = conn.body is not None and not conn.body.is_eof()
        conn.body = None
        if mid_body and conn.closing_for is None:
            self.stats.aborted_uploads += 1
        return mid_body

    # --- internals --------------------------------------------------------------------------

    def _enter(self, conn: GuardedHandler, queue: _Queue) -> None:
        assert self._loop is not None
        self._leave(conn)
        queue[conn] = self._loop.time()
        conn.queue = queue

    def _leave(self, conn: GuardedHandler) -> None:
        if conn.queue is not None:
            conn.queue.pop(conn, None)
            conn.queue = None

    def _close(self, conn: GuardedHandler, reason: Closed) -> None:
        self._leave(conn)
        if conn.closing_for is None:
            conn.closing_for = reason
            self.stats.closed[reason] += 1
        conn.force_close()

    def _oldest(self) -> GuardedHandler | None:
        """The next connection to give up: the oldest idle one, else the oldest slow one."""
        if self._idle:
            return next(iter(self._idle))
        head = next(iter(self._heads.items()), None)
        body = next(iter(self._bodies.items()), None)
        if head is None or (body is not None and body[1] < head[1]):
            return body[0] if body is not None else None
        return head[0]

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        limits = self.limits
        self._expire(self._heads, now - limits.header_timeout, Closed.HEADER_TIMEOUT)
        self._expire(self._idle, now - limits.keepalive_timeout, Closed.IDLE)
        self._expire(self._bodies, now - limits.body_timeout, Closed.BODY_TIMEOUT)
        self._ticking = self._loop.call_later(limits.tick, self._tick)

    def _expire(self, queue: _Queue, entered_by: float, reason: Closed) -> None:
        while queue:
            conn, entered = next(iter(queue.items()))
            if entered > entered_by:
                return
            self._close(conn, reason)


class GuardedHandler(RequestHandler):
    """aiohttp's HTTP protocol, reporting to a `ConnectionGuard`. Relies on aiohttp 3.x
    internals (`_request_count`, `_messages`, `_task_handler`); tests/e2e/test_slow_clients.py
    fails if they change."""

    __slots__ = (
        "body",
        "client",
        "closing_for",
        "counted",
        "guard",
        "in_flight",
        "malformed",
        "queue",
    )

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.client = ""
        self.queue: _Queue | None = None
        self.body: StreamReader | None = None
        self.in_flight = 0
        self.closing_for: Closed | None = None
        self.counted = False
        self.malformed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.guard.opened(self)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        heads = self._request_count - before
        if heads:
            self.in_flight += heads
            body = self._messages[-1][1] if self._messages else None
            self.guard.head_parsed(self, None if body is None or body.is_eof() else body)
        elif self.queue is not None:
            self.guard.data_arrived(self)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.in_flight -= 1
            if self.transport is not None:
                self.guard.answered(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        task = self._task_handler
        if self.guard.lost(self) and task is not None and not task.done():
            task.cancel()  # the handler waits for a body that will never come
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        self.malformed = status < 500 and isinstance(exc, HttpProcessingError)
        if self.malformed:  # aiohttp could not parse the request: it answers 400
            self.guard.stats.malformed_requests += 1
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self.malformed = False

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if not self.malformed:  # counted instead of a traceback per malformed request
            super().log_exception(*args, **kw)


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections are `GuardedHandler`s."""

    def __init__(self, server: web.Server, guard: ConnectionGuard) -> None:
        kwargs: dict[str, Any] = dict(server._kwargs)  # the handler arguments aiohttp built
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **kwargs,
        )
        self.guard = guard

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An `AppRunner` serving through a `ConnectionGuard`; the app's /metrics reports it.

    aiohttp's own keep-alive timer stays as a backstop behind the guard's (it closes a
    connection waiting for a head `keepalive_timeout + header_timeout` after its last answer).
    """

    __slots__ = ("guard",)

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        limits = guard.limits
        kwargs.setdefault("keepalive_timeout", limits.keepalive_timeout + limits.header_timeout)
        super().__init__(app, **kwargs)
        self.guard = guard
        app[CONNECTION_STATS] = guard.stats

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        self.guard.start(asyncio.get_running_loop())
        return GuardedServer(server, self.guard)

    async def shutdown(self) -> None:
        self.guard.close_waiting()  # the sites are stopped: no new connections come
        await super().shutdown()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            self.guard.stop()


class ConnectionCollector(Collector):
    """Prometheus collector of an app's `ConnectionStats` (nothing until a guard serves it)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        stats = self._app.get(CONNECTION_STATS)
        if stats is None:
            return
        yield GaugeMetricFamily(
            "quorum_connections_open", "Client connections open.", value=stats.open
        )
        closed = CounterMetricFamily(
            "quorum_connections_closed",
            "Client connections Quorum closed, by reason.",
            labels=["reason"],
        )
        for reason in Closed:
            closed.add_metric([reason.value], stats.closed[reason])
        yield closed
        for name, text, value in (
            (
                "quorum_aborted_uploads",
                "Requests whose client left mid-body.",
                stats.aborted_uploads,
            ),
            (
                "quorum_malformed_requests",
                "Requests aiohttp could not parse (400).",
                stats.malformed_requests,
            ),
            ("quorum_accept_errors", "Failed accepts (out of descriptors).", stats.accept_errors),
        ):
            yield CounterMetricFamily(name, text, value=value)
