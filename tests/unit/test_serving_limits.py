"""The serving limits' settings, their report line and the accept-error handler
(the behaviour on real connections: tests/e2e/test_slow_clients.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from typing import Any

import pytest

from bot.serving import (
    ACCEPT_BATCH,
    IntervalReport,
    ListeningSocket,
    accept_error_handler,
    descriptor_budget,
    limits_from,
)
from bot.settings import SettingsError, load_settings
from handlers.connection_limits import Closed, ConnectionGuard, ConnectionLimits


def test_limits_come_from_the_settings() -> None:
    settings = load_settings(
        {
            "QUORUM_HEADER_TIMEOUT": "2.5",
            "QUORUM_BODY_TIMEOUT": "7",
            "QUORUM_KEEPALIVE_TIMEOUT": "1",
            "QUORUM_MAX_CONNECTIONS_PER_CLIENT": "0",
            "QUORUM_DESCRIPTOR_RESERVE": "10",
        }
    )
    limits = limits_from(settings)
    assert (limits.header_timeout, limits.body_timeout, limits.keepalive_timeout) == (2.5, 7, 1)
    assert limits.max_per_client == 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 0 < limits.max_open < soft - 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUORUM_HEADER_TIMEOUT", "0"),
        ("QUORUM_BODY_TIMEOUT", "-1"),
        ("QUORUM_KEEPALIVE_TIMEOUT", "soon"),
        ("QUORUM_MAX_CONNECTIONS_PER_CLIENT", "-1"),
        ("QUORUM_DESCRIPTOR_RESERVE", "many"),
        ("QUORUM_CONNECTION_REPORT_INTERVAL", "0"),
    ],
)
def test_a_bad_limit_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert [p.split(":")[0] for p in caught.value.problems] == [name]


def test_the_budget_keeps_the_reserve_and_what_is_open() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert descriptor_budget(0) - descriptor_budget(100) == 100
    assert descriptor_budget(soft) == 1  # never zero (zero would mean "no budget")


def test_the_tick_is_a_quarter_of_the_shortest_timeout_within_bounds() -> None:
    assert ConnectionLimits(header_timeout=0.4, body_timeout=9).tick == pytest.approx(0.1)
    assert ConnectionLimits().tick == 1.0
    assert ConnectionLimits(header_timeout=0.001).tick == 0.02


def test_the_report_is_one_line_per_interval_and_none_when_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = ConnectionGuard(ConnectionLimits())
    report = IntervalReport(guard.stats, 60)
    with caplog.at_level(logging.INFO, logger="bot.serving"):
        report.report()
        assert caplog.records == []
        guard.stats.closed[Closed.HEADER_TIMEOUT] += 3
        guard.stats.closed[Closed.IDLE] += 50  # normal: not reported
        guard.stats.accept_errors += 2
        guard.stats.aborted_uploads += 1
        report.report()
        report.report()  # nothing new since
    assert [r.getMessage() for r in caplog.records] == [
        "connections in the last 60s: 3 closed for a slow request head, 1 aborted uploads, "
        "2 accept errors (out of descriptors); 0 open"
    ]


def test_accept_errors_are_counted_and_everything_else_passed_on() -> None:
    guard = ConnectionGuard(ConnectionLimits())
    passed_on: list[dict[str, Any]] = []
    handle = accept_error_handler(guard, lambda _loop, context: passed_on.append(context))
    loop = asyncio.new_event_loop()
    try:
        emfile = OSError(errno.EMFILE, "Too many open files")
        for _ in range(3):
            handle(loop, {"message": "socket.accept() out of system resource", "exception": emfile})
        other = {"message": "Task exception was never retrieved", "exception": ValueError()}
        handle(loop, other)
    finally:
        loop.close()
    assert guard.stats.accept_errors == 3
    assert passed_on == [other]


async def test_the_listening_socket_accepts_a_batch_per_turn() -> None:
    server = ListeningSocket(socket.AF_INET, socket.SOCK_STREAM, 0)
    clients: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        server.setblocking(False)
        for _ in range(ACCEPT_BATCH + 2):
            client = socket.create_connection(server.getsockname())
            clients.append(client)
        await asyncio.sleep(0.05)
        accepted = [server.accept()[0] for _ in range(ACCEPT_BATCH)]
        with pytest.raises(BlockingIOError):  # more are waiting, but not in this turn
            server.accept()
        await asyncio.sleep(0)  # the next turn of the loop
        accepted.append(server.accept()[0])
        for sock in accepted:
            sock.close()
    finally:
        server.close()
        for client in clients:
            client.close()
