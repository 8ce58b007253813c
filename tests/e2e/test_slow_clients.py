"""Slow, idle and broken clients against Quorum served as `quorum serve` serves it
(`bot/serving.py`): in this process on a loopback port (the full app, fake Slack, real HTTP),
and as a real `python -m bot serve` process under a low descriptor limit.

Client connections come from several loopback addresses (127.0.0.2, 127.0.0.3, ...) where the
per-client cap matters: Linux routes all of 127/8 to the loopback interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from bot.app import Intervals, build_app
from bot.pipelines.signing import StandardWebhookSigner
from bot.serving import Serving
from handlers.action_ids import ActionId
from handlers.connection_limits import ConnectionLimits
from tests.e2e.harness import WEBHOOK_SECRET, Env, Quorum, body_for, running_env
from tests.paths import EXAMPLE_POLICY, REPO
from tests.storage.dbs import DB_KINDS, DbKind, fresh_database_url

OWNER_2 = "U0WEB2"
FAST = ConnectionLimits(header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class GuardedQuorum(Quorum):
    """The harness's Quorum, served through `bot.serving.Serving` as `quorum serve` does."""

    def __init__(self, base: Quorum, limits: ConnectionLimits) -> None:
        super().__init__(base.settings, base.policy, base.tuning, base.clock, base.egress_resolver)
        self.limits = limits
        self.serving: Serving | None = None

    async def start(self) -> None:
        self.app = build_app(
            self.settings,
            self.policy,
            clock=self.clock,
            tuning=self.tuning,
            intervals=Intervals(announce=0.2, deliveries=0.2),
            egress_resolver=self.egress_resolver,
        )
        self.serving = await Serving.start(self.app, "127.0.0.1", 0, self.limits)
        self.url = f"http://127.0.0.1:{self.serving.port}"
        # A new connection per request: a pooled one may have been closed as idle meanwhile.
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.serving is not None:
            await self.serving.close()
            self.serving = None

    @property
    def port(self) -> int:
        assert self.serving is not None
        return self.serving.port


@asynccontextmanager
async def guarded_env(db_url: str, limits: ConnectionLimits) -> AsyncIterator[Env]:
    async with running_env(db_url) as env:
        await env.quorum.stop()
        env.quorum = GuardedQuorum(env.quorum, limits)
        await env.quorum.start()
        yield env


@asynccontextmanager
async def sqlite_env(tmp_path: Path, limits: ConnectionLimits) -> AsyncIterator[Env]:
    async with fresh_database_url("sqlite", tmp_path) as url, guarded_env(url, limits) as env:
        yield env


def _quorum(env: Env) -> GuardedQuorum:
    assert isinstance(env.quorum, GuardedQuorum)
    return env.quorum


async def _connect(port: int, source: str = "127.0.0.1") -> Streams:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the server sent until it closed the connection (a reset counts as closed)."""
    received = b""
    async with asyncio.timeout(timeout):
        with suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def _trickle(writer: asyncio.StreamWriter, every: float = 0.05) -> None:
    """A byte at a time, forever (until the server closes the connection)."""
    with suppress(ConnectionError, asyncio.CancelledError):
        while not writer.is_closing():
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(every)


async def _metrics(env: Env) -> dict[str, float]:
    http = env.quorum.http
    assert http is not None
    async with http.get(f"{env.quorum.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("quorum_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def _wait_metric(env: Env, name: str, at_least: float, timeout: float = 5.0) -> float:
    async with asyncio.timeout(timeout):
        while (value := (await _metrics(env)).get(name, 0.0)) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return value


def _signed_webhook(raw: bytes, webhook_id: str) -> bytes:
    headers = StandardWebhookSigner(WEBHOOK_SECRET).sign(webhook_id, datetime.now(UTC), raw)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        "POST /webhooks/generic HTTP/1.1\r\nHost: quorum\r\nContent-Type: application/json\r\n"
        f"{lines}Content-Length: {len(raw)}\r\n\r\n"
    ).encode()


# --- in this process --------------------------------------------------------------------------


async def test_a_slow_request_head_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    async with sqlite_env(tmp_path, FAST) as env:
        reader, writer = await _connect(_quorum(env).port)
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\nX-Slow: ")
        started = time.monotonic()
        dripping = asyncio.create_task(_trickle(writer))
        # Others are served meanwhile.
        assert (await env.quorum.status("missing"))[0] == 404
        assert await _until_closed(reader) == b""
        elapsed = time.monotonic() - started
        dripping.cancel()
        assert 0.4 < elapsed < 2.0, elapsed
        metrics = await _metrics(env)
        assert metrics['quorum_connections_closed_total{reason="header_timeout"}'] == 1


@pytest.mark.parametrize("db_kind", DB_KINDS)
async def test_a_slow_body_is_cut_off_and_opens_nothing(tmp_path: Path, db_kind: DbKind) -> None:
    async with (
        fresh_database_url(db_kind, tmp_path) as url,
        guarded_env(url, FAST) as env,
    ):
        body = body_for(callback_url=env.pipeline.url)
        raw = json.dumps(body).encode()
        webhook_id = f"msg_{hashlib.sha256(raw).hexdigest()[:20]}"
        reader, writer = await _connect(_quorum(env).port)
        writer.write(_signed_webhook(raw, webhook_id) + raw[:10])  # then a byte at a time
        started = time.monotonic()
        dripping = asyncio.create_task(_trickle(writer))
        assert await _until_closed(reader) == b""
        elapsed = time.monotonic() - started
        dripping.cancel()
        assert 0.4 < elapsed < 2.0, elapsed
        metrics = await _metrics(env)
        assert metrics['quorum_connections_closed_total{reason="body_timeout"}'] == 1
        assert metrics["quorum_aborted_uploads_total"] == 0  # Quorum cut it: not the client
        # The cut request opened nothing: the same signed delivery, sent whole, is new (202).
        assert env.slack.calls_to("chat.postMessage") == []
        status, data = await env.quorum.webhook(body, webhook_id=webhook_id)
        assert status == 202, data


async def test_an_aborted_upload_is_counted_not_logged_as_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with sqlite_env(tmp_path, FAST) as env:
        for _ in range(3):
            _, writer = await _connect(_quorum(env).port)
            writer.write(
                b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 4000\r\n\r\npayload=%7B%22type"
            )
            await writer.drain()
            await asyncio.sleep(0.05)  # the head is parsed, the handler waits for the body
            writer.close()
        assert await _wait_metric(env, "quorum_aborted_uploads_total", 3) == 3
        metrics = await _metrics(env)
        assert [k for k in metrics if 'status="5' in k] == []  # no server errors: the client left
        assert metrics['quorum_http_requests_total{route="/slack/events",status="499"}'] == 3
        await asyncio.sleep(0.1)
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


async def test_a_malformed_request_gets_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with sqlite_env(tmp_path, FAST) as env:
        reader, writer = await _connect(_quorum(env).port)
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\nno colon here\r\n\r\n")
        answer = await _until_closed(reader)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
        assert (await _metrics(env))["quorum_malformed_requests_total"] == 1
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with sqlite_env(tmp_path, FAST) as env:
        reader, writer = await _connect(_quorum(env).port)
        for _ in range(2):  # kept alive between requests...
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: quorum\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await asyncio.sleep(0.2)  # well within the keep-alive timeout
        started = time.monotonic()
        assert await _until_closed(reader) == b""  # ... and closed once idle too long
        assert 0.1 < time.monotonic() - started < 1.5
        assert (await _metrics(env))['quorum_connections_closed_total{reason="idle"}'] >= 1


async def test_connections_per_client_address_are_capped(tmp_path: Path) -> None:
    limits = ConnectionLimits(
        header_timeout=30, body_timeout=30, keepalive_timeout=30, max_per_client=3
    )
    async with sqlite_env(tmp_path, limits) as env:
        port = _quorum(env).port
        held = [await _connect(port, "127.0.0.2") for _ in range(3)]
        one_too_many, _ = await _connect(port, "127.0.0.2")
        assert await _until_closed(one_too_many, timeout=2.0) == b""
        # Another address is served meanwhile; the three held are still open.
        assert (await env.quorum.status("missing"))[0] == 404
        metrics = await _metrics(env)
        assert metrics['quorum_connections_closed_total{reason="per_client_limit"}'] == 1
        assert metrics["quorum_connections_open"] >= 3
        # Once one of them closes, that address may connect again.
        held[0][1].close()
        await asyncio.sleep(0.1)
        reader, writer = await _connect(port, "127.0.0.2")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: quorum\r\nConnection: close\r\n\r\n")
        assert (await _until_closed(reader)).startswith(b"HTTP/1.1 200")
        for _, held_writer in held[1:]:
            held_writer.close()


@pytest.mark.parametrize("db_kind", DB_KINDS)
async def test_slow_connections_do_not_starve_a_signed_slack_click(
    tmp_path: Path, db_kind: DbKind
) -> None:
    """300 slow clients (heads and bodies, long timeouts) against a budget of 40 connections:
    each new connection closes the oldest slow one, so the click arriving last is served."""
    limits = ConnectionLimits(
        header_timeout=60, body_timeout=60, keepalive_timeout=60, max_per_client=64, max_open=40
    )
    async with (
        fresh_database_url(db_kind, tmp_path) as url,
        guarded_env(url, limits) as env,
    ):
        request_id = await env.open()
        port = _quorum(env).port
        slow: list[Streams] = []
        for n in range(300):
            streams = await _connect(port, f"127.0.0.{2 + n % 10}")
            if n % 2:
                streams[1].write(b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\nX-Slow: ")
            else:
                streams[1].write(
                    b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\n"
                    b"Content-Length: 5000\r\n\r\npayload="
                )
            slow.append(streams)
        await asyncio.sleep(0.1)
        status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
        assert status == 200
        _, data = await env.quorum.status(request_id)
        assert [vote["user"] for vote in data["votes"]] == [OWNER_2]
        metrics = await _metrics(env)
        assert metrics['quorum_connections_closed_total{reason="descriptor_budget"}'] >= 260
        assert metrics["quorum_connections_open"] <= 41
        for _, writer in slow:
            writer.close()


async def test_shutdown_does_not_wait_for_slow_clients(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout=60, body_timeout=60, keepalive_timeout=60)
    async with sqlite_env(tmp_path, limits) as env:
        port = _quorum(env).port
        _, slow_body = await _connect(port)
        slow_body.write(
            b"POST /slack/events HTTP/1.1\r\nHost: quorum\r\nContent-Length: 5000\r\n\r\np"
        )
        _, slow_head = await _connect(port)
        slow_head.write(b"POST /slack/events HTTP/1.1\r\nHost: q")
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await env.quorum.stop()  # aiohttp alone waits its shutdown timeout (10 s) for the body
        assert time.monotonic() - started < 3.0
        for writer in (slow_body, slow_head):
            writer.close()


# --- `quorum serve` as a process under a low descriptor limit --------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_with_descriptors(
    tmp_path: Path, port: int, limit: int, **settings: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "SLACK_"))}
    env.update(
        QUORUM_DEV="1",
        QUORUM_PORT=str(port),
        QUORUM_CONFIG=str(EXAMPLE_POLICY),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        QUORUM_MAX_CONNECTIONS_PER_CLIENT="0",
        QUORUM_HEADER_TIMEOUT="60",
        QUORUM_KEEPALIVE_TIMEOUT="60",
        QUORUM_CONNECTION_REPORT_INTERVAL="1",
        **settings,
    )

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with (tmp_path / "serve.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=low_limit,
        )


def _healthz(port: int, timeout: float = 2.0) -> int:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_healthy(proc: subprocess.Popen[str], port: int, log: Path, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with suppress(OSError):
            if _healthz(port) == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"no answer from /healthz within {within}s:\n{log.read_text()}")


async def _flood(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send half a request head and wait (those the kernel's accept
    queue cannot take fail to connect: dropped)."""
    loop = asyncio.get_running_loop()

    async def one() -> socket.socket | None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            async with asyncio.timeout(2.0):
                await loop.sock_connect(sock, ("127.0.0.1", port))
            sock.send(b"GET /healthz HTTP/1.1\r\nHost: q")
            return sock
        except (OSError, TimeoutError):
            sock.close()
            return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [sock for sock in opened if sock is not None]


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_keeps_room_for_new_clients_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """Descriptor limit 256, reserve 96: ~150 connections fit. 400 slow ones arrive; each new
    connection past the budget closes the oldest, and /healthz is still answered at once."""
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = _serve_with_descriptors(tmp_path, port, 256, QUORUM_DESCRIPTOR_RESERVE="96")
    try:
        _wait_healthy(proc, port, log, within=60)
        held = asyncio.run(_flood(port, 400))
        try:
            assert len(held) > 150
            started = time.monotonic()
            assert _healthz(port, timeout=5) == 200
            assert time.monotonic() - started < 3.0
            time.sleep(1.5)  # one report line
        finally:
            for sock in held:
                sock.close()
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "closed for the descriptor budget" in text, text
    assert "accept errors" not in text, text  # the budget kept descriptors free


def test_serve_backs_off_when_accepts_run_out_of_descriptors(tmp_path: Path) -> None:
    """No reserve: connections use every descriptor and accepts fail (EMFILE). Each failure is
    counted (one log line per interval, no traceback), makes room, and the server serves
    again once the clients go."""
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = _serve_with_descriptors(tmp_path, port, 128, QUORUM_DESCRIPTOR_RESERVE="0")
    try:
        _wait_healthy(proc, port, log, within=60)
        held = asyncio.run(_flood(port, 400))
        try:
            time.sleep(3.0)  # accepts keep failing meanwhile
        finally:
            for sock in held:
                sock.close()
        _wait_healthy(proc, port, log, within=10)
        time.sleep(1.5)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "accept errors (out of descriptors)" in text, text
    assert "Traceback" not in text, text
    assert "socket.accept() out of system resource" not in text, text
    assert len(text.splitlines()) < 40, text
