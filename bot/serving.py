"""`quorum serve`'s HTTP server: listening sockets, connection limits, the descriptor budget and
accept errors (see "Serving limits" in docs/architecture.md).

- The descriptor budget: the soft `RLIMIT_NOFILE` is raised to the hard limit, and client
  connections may use what is left of it after the descriptors open at start and a reserve (for
  database connections, outbound calls and new clicks). Past it the oldest idle or slow
  connection is closed (`handlers/connection_limits.py`).
- Accept errors (EMFILE/ENFILE: no descriptor left anyway): asyncio retries an accept after a
  second; the listening socket here stops trying for that second after the first failure
  (asyncio's loop would try `backlog` more times), the oldest idle or slow connections are closed
  to make room, and the failure is counted, never logged as a traceback.
- Counts of what the limits did are logged as one line per interval, and exported on /metrics.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.settings import Settings
from handlers.connection_limits import (
    Closed,
    ConnectionGuard,
    ConnectionLimits,
    ConnectionStats,
    GuardedAppRunner,
)

log = logging.getLogger(__name__)

OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_REST = 0.5  # seconds a listening socket refuses to retry after running out (asyncio: 1 s)
ACCEPT_SHED = 16  # connections closed to make room when an accept found no descriptor
# Accepts per turn of the event loop. asyncio accepts up to `backlog` connections per turn, each
# a descriptor before any is seen by the guard: a flood would overshoot the budget by that many.
ACCEPT_BATCH = 16
BACKLOG = 128

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def limits_from(settings: Settings) -> ConnectionLimits:
    """The configured limits, with the descriptor budget of this process."""
    return ConnectionLimits(
        header_timeout=settings.quorum_header_timeout,
        body_timeout=settings.quorum_body_timeout,
        keepalive_timeout=settings.quorum_keepalive_timeout,
        max_per_client=settings.quorum_max_connections_per_client,
        max_open=descriptor_budget(settings.quorum_descriptor_reserve),
    )


def descriptor_budget(reserve: int) -> int:
    """How many client connections fit in this process's descriptors (0: no limit known)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return 0
    budget = max(1, soft - _open_descriptors() - reserve)
    log.info(
        "descriptor limit %d: up to %d client connections (%d kept in reserve)",
        soft,
        budget,
        reserve,
    )
    if budget < 64:
        log.warning(
            "only %d client connections fit under the descriptor limit (%d); raise `ulimit -n`",
            budget,
            soft,
        )
    return budget


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return 32  # no /proc: a typical start-up count


class ListeningSocket(socket.socket):
    """A listening socket that accepts at most `ACCEPT_BATCH` connections per turn of the event
    loop and, after running out of descriptors, rests `ACCEPT_REST` seconds; both by answering
    "would block", which ends asyncio's accept loop for that turn."""

    __slots__ = ("_accepted", "_rest_until")

    def __init__(self, family: int, kind: int, proto: int, fileno: int | None = None) -> None:
        super().__init__(family, kind, proto, fileno)
        self._rest_until = 0.0
        self._accepted = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self._accepted >= ACCEPT_BATCH:
            raise BlockingIOError(errno.EAGAIN, "enough accepts for this turn")
        if self._rest_until and time.monotonic() < self._rest_until:
            raise BlockingIOError(errno.EAGAIN, "resting after running out of descriptors")
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                self._rest_until = time.monotonic() + ACCEPT_REST
            raise
        if not self._accepted:
            asyncio.get_running_loop().call_soon(self._next_turn)
        self._accepted += 1
        return accepted

    def _next_turn(self) -> None:
        self._accepted = 0


def listening_sockets(host: str, port: int, backlog: int = BACKLOG) -> list[ListeningSocket]:
    """Bound, listening, non-blocking sockets for every address `host` resolves to."""
    sockets: list[ListeningSocket] = []
    seen: set[tuple[Any, ...]] = set()
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if address in seen:
            continue
        seen.add(address)
        sock = ListeningSocket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            for opened in sockets:
                opened.close()
            raise
        sockets.append(sock)
    return sockets


def accept_error_handler(
    guard: ConnectionGuard, previous: ExceptionHandler | None
) -> ExceptionHandler:
    """A loop exception handler that counts failed accepts (and makes room) instead of logging
    a traceback for each; everything else goes to `previous` (or asyncio's default)."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in OUT_OF_DESCRIPTORS
            and "accept" in str(context.get("message", ""))
        ):
            guard.stats.accept_errors += 1
            guard.shed(ACCEPT_SHED)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


_REPORTED = (
    (Closed.HEADER_TIMEOUT, "closed for a slow request head"),
    (Closed.BODY_TIMEOUT, "cut off for a slow body"),
    (Closed.PER_CLIENT, "refused over the per-client limit"),
    (Closed.BUDGET, "closed for the descriptor budget"),
)


class IntervalReport:
    """One log line per interval with what the limits did in it (nothing when nothing did)."""

    def __init__(self, stats: ConnectionStats, interval: float) -> None:
        self._stats = stats
        self._interval = interval
        self._last = self._snapshot()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(self._interval, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.report()

    def report(self) -> None:
        now = self._snapshot()
        delta = now - self._last
        self._last = now
        parts = [f"{delta[key]} {text}" for key, text in _REPORTED if delta[key]]
        for key, text in (
            ("aborted", "aborted uploads"),
            ("malformed", "malformed requests"),
            ("accept", "accept errors (out of descriptors)"),
        ):
            if delta[key]:
                parts.append(f"{delta[key]} {text}")
        if parts:
            log.warning(
                "connections in the last %gs: %s; %d open",
                self._interval,
                ", ".join(parts),
                self._stats.open,
            )

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.report()
        self._timer = loop.call_later(self._interval, self._tick, loop)

    def _snapshot(self) -> Counter[str]:
        stats = self._stats
        counts: Counter[str] = Counter({str(k): v for k, v in stats.closed.items()})
        counts.update(
            aborted=stats.aborted_uploads,
            malformed=stats.malformed_requests,
            accept=stats.accept_errors,
        )
        return counts


class Serving:
    """A started server: the app behind a `ConnectionGuard` on `host`:`port` (0: any free one)."""

    def __init__(self, runner: GuardedAppRunner, report: IntervalReport, restore: Any) -> None:
        self.runner = runner
        self._report = report
        self._restore = restore

    @property
    def guard(self) -> ConnectionGuard:
        return self.runner.guard

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    @classmethod
    async def start(
        cls,
        app: web.Application,
        host: str,
        port: int,
        limits: ConnectionLimits,
        *,
        report_interval: float = 60.0,
        shutdown_timeout: float = 10.0,
    ) -> Serving:
        loop = asyncio.get_running_loop()
        runner = GuardedAppRunner(
            app, ConnectionGuard(limits), access_log=None, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(accept_error_handler(runner.guard, previous))
        report = IntervalReport(runner.guard.stats, report_interval)
        report.start(loop)
        serving = cls(runner, report, previous)
        try:
            for sock in listening_sockets(host, port):
                await web.SockSite(runner, sock, backlog=BACKLOG).start()
        except BaseException:
            await serving.close()
            raise
        return serving

    async def close(self) -> None:
        try:
            await self.runner.cleanup()
        finally:
            self._report.stop()
            asyncio.get_running_loop().set_exception_handler(self._restore)


def run(app: web.Application, settings: Settings, limits: ConnectionLimits) -> None:
    """Serve until SIGINT or SIGTERM, then shut down in order (the app's cleanup context)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        serving = await Serving.start(
            app,
            settings.quorum_host,
            settings.quorum_port,
            limits,
            report_interval=settings.quorum_connection_report_interval,
        )
        try:
            await stopping.wait()
        finally:
            await serving.close()

    asyncio.run(main())
