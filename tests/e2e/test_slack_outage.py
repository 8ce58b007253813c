"""Slack down: Quorum degrades instead of breaking, then catches up.

With the fake Slack refusing connections, answering 500s or 429s: clicks and slash commands
answer 200 (never 500), the status API answers from what is stored, /readyz says Slack is
degraded, /metrics counts the failures by method and kind, and the log stays bounded over many
sweeps. A non-deciding vote is checked against a cached users.info answer (stale if error); a
deciding vote is refused and changes nothing. When Slack is back the card is brought up to date
and the request can be decided.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.app import Intervals, build_app
from bot.clock import FixedClock
from bot.log_throttle import FailureLog
from handlers.action_ids import ActionId
from handlers.slack_chat import ChatError, make_web_client
from handlers.slack_directory import STALE_IF_ERROR, SlackDirectory
from handlers.slack_health import SlackHealth
from tests.e2e import harness
from tests.e2e.harness import Env, Quorum, running_env
from tests.e2e.slash import command
from tests.fakes.slack_api import FakeSlack

# Sweeps many times a second, backing off from Slack for at most half a second.
FAST = Intervals(
    announce=0.05, requesters=0.1, deliveries=0.05, timers=0.1, messages=0.05, slack_retry_cap=0.5
)
SRE_1, SRE_2 = "U0SRE1", "U0SRE2"
WEB_2, WEB_3 = "U0WEB2", "U0WEB3"  # U0WEB1 requests (octo-web)
# Loggers whose lines count: Quorum's own (bolt, aiohttp and slack_sdk are not ours to bound).
OURS = ("bot", "handlers", "storage")


class OffsetClock:
    """The wall clock plus an offset a test can move forward (cache ages, signatures)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class FastQuorum(Quorum):
    async def start(self) -> None:
        self.app = build_app(
            self.settings, self.policy, clock=self.clock, tuning=self.tuning, intervals=FAST
        )
        self.runner = aiohttp.web.AppRunner(self.app)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.http = aiohttp.ClientSession()


@pytest.fixture
async def outage_env(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Env, OffsetClock]]:
    monkeypatch.setattr(harness, "Quorum", FastQuorum)
    clock = OffsetClock()
    async with running_env(db_url, clock=clock) as env:
        yield env, clock


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll `check` (sync or async) until it is truthy: what is awaited has no signal."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def get_json(env: Env, path: str) -> tuple[int, dict[str, Any]]:
    assert env.quorum.http is not None
    async with env.quorum.http.get(env.quorum.url + path) as resp:
        return resp.status, await resp.json(content_type=None)


async def metrics(env: Env) -> str:
    assert env.quorum.http is not None
    async with env.quorum.http.get(env.quorum.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def failures_of(text: str, method: str, kind: str) -> float:
    sample = f'quorum_slack_api_failures_total{{kind="{kind}",method="{method}"}}'
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def voters(env: Env, request_id: str) -> list[str]:
    status, data = await env.quorum.status(request_id)
    assert status == 200, data
    return sorted(v["user"] for v in data["votes"])


async def rules_of(env: Env, request_id: str) -> list[tuple[str, list[str]]]:
    status, data = await env.quorum.status(request_id)
    assert status == 200, data
    return [(r["name"], r["approved_by"]) for r in data["rules"]]


def quorum_logs(caplog: pytest.LogCaptureFixture) -> None:
    for name in OURS:
        caplog.set_level(logging.INFO, logger=name)


def our_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.split(".")[0] in OURS and r.levelno >= logging.WARNING
    ]


def card_shows(env: Env, request_id: str, *users: str) -> Callable[[], bool]:
    """The card (its latest text in the fake Slack) names every one of `users`."""

    def check() -> bool:
        for message in env.slack.messages.values():
            blocks = json.dumps(message.get("blocks", ""))
            if request_id in blocks and all(user in blocks for user in users):
                return True
        return False

    return check


async def test_unreachable_slack_degrades_then_catches_up(
    outage_env: tuple[Env, OffsetClock], caplog: pytest.LogCaptureFixture
) -> None:
    env, clock = outage_env
    quorum_logs(caplog)
    request_id = await env.open()
    await until(lambda: env.quorum.deps.directory.known_installation() is not None)
    # Before the outage: one approval, and two people whose clicks Slack has vouched for (a
    # Reject click opens the reason modal and records nothing).
    assert (await env.quorum.click(ActionId.approve, WEB_2, request_id))[0] == 200
    for user in (SRE_1, WEB_3):
        assert (await env.quorum.click(ActionId.reject, user, request_id))[0] == 200
    await env.slack.wait_for("views.open", count=2)
    await env.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    clock.offset += timedelta(minutes=3)  # users.info answers are past their minute, not stale

    await env.slack.go_down()
    caplog.clear()
    calls_before = len(env.slack.calls)

    # A non-deciding vote: checked against the cached answer, recorded, acked with 200.
    assert (await env.quorum.click(ActionId.approve, SRE_1, request_id))[0] == 200
    assert await voters(env, request_id) == [SRE_1, WEB_2]
    # The deciding vote: Slack cannot re-check its voters, so it is refused; nothing changes.
    assert (await env.quorum.click(ActionId.approve, WEB_3, request_id))[0] == 200
    status, data = await env.quorum.status(request_id)
    assert (status, data["state"]) == (200, "pending")
    assert await voters(env, request_id) == [SRE_1, WEB_2]
    # Someone Slack never vouched for: refused (fail closed), still a 200.
    assert (await env.quorum.click(ActionId.approve, "U0SRE9", request_id))[0] == 200
    assert await voters(env, request_id) == [SRE_1, WEB_2]
    # A rejection would decide (reject: any): its modal answers with the fail-closed refusal.
    status, body = await env.quorum.submit_reject(WEB_3, request_id, "not now")
    assert status == 200
    assert "could not check with Slack who you are" in body, body
    assert await voters(env, request_id) == [SRE_1, WEB_2]
    # Slash commands answer from what Quorum knows.
    pending = await command(env, "/approvals", SRE_2, "pending")
    assert pending.status == 200
    assert (await command(env, "/approvals", SRE_2, "help")).status == 200

    status, ready = await get_json(env, "/readyz")
    assert status == 200
    assert (ready["status"], ready["slack"]) == ("ready", "degraded")
    assert ready["slack_failure"] == "connection"
    assert datetime.fromisoformat(ready["slack_degraded_since"]) <= clock.now()

    # Many sweeps (every 50 ms) while Slack stays down: a bounded log, no tracebacks. (The card
    # sync's first failure waits out slack-sdk's connection retries, ~2.5 s, before it is logged.)
    await asyncio.sleep(2.5)
    await until(
        lambda: any(r.getMessage().startswith("card sync") for r in our_lines(caplog)), 10.0
    )
    lines = our_lines(caplog)
    assert 1 <= len(lines) <= 12, [r.getMessage() for r in lines]
    assert [r.getMessage() for r in lines if r.exc_info] == []
    card_lines = [r.getMessage() for r in lines if r.getMessage().startswith("card sync")]
    assert card_lines
    assert "next retry at" in card_lines[0]
    assert len(env.slack.calls) == calls_before  # nothing reached Slack
    text = await metrics(env)
    assert failures_of(text, "chat.update", "connection") >= 1

    # The status API never asks Slack, even in a process that never listed the user group:
    # the rule counts the approvals assigned to it when they were cast.
    assert await rules_of(env, request_id) == [
        ("owner-review", [WEB_2]),
        ("sre-signoff", [SRE_1]),
    ]
    await env.restart()
    assert await rules_of(env, request_id) == [
        ("owner-review", [WEB_2]),
        ("sre-signoff", [SRE_1]),
    ]
    assert (await env.quorum.click(ActionId.approve, WEB_3, request_id))[0] == 200
    assert await voters(env, request_id) == [SRE_1, WEB_2]

    await env.slack.come_back()
    await until(lambda: env.quorum.deps.directory.known_installation() is not None)
    # The card catches up with the vote recorded during the outage.
    await until(card_shows(env, request_id, SRE_1, WEB_2))
    status, ready = await get_json(env, "/readyz")
    assert ready["slack"] == "ok"
    assert (await env.quorum.click(ActionId.approve, WEB_3, request_id))[0] == 200
    status, data = await env.quorum.status(request_id)
    assert data["state"] == "approved"
    callbacks = await env.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "approved"
    assert any("recovered" in r.getMessage() for r in caplog.records)
    errors = [r.getMessage() for r in our_lines(caplog) if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.parametrize("status", [500, 429])
async def test_slack_answering_errors_degrades_then_catches_up(
    outage_env: tuple[Env, OffsetClock], caplog: pytest.LogCaptureFixture, status: int
) -> None:
    env, _ = outage_env
    quorum_logs(caplog)
    request_id = await env.open()
    await until(lambda: env.quorum.deps.directory.known_installation() is not None)
    assert (await env.quorum.click(ActionId.reject, WEB_2, request_id))[0] == 200
    await env.slack.wait_for("views.open")  # Slack vouched for WEB_2 (no vote recorded)
    env.slack.fail_all(status, retry_after=1)
    caplog.clear()

    assert (await env.quorum.click(ActionId.approve, WEB_2, request_id))[0] == 200
    assert await voters(env, request_id) == [WEB_2]  # its users.info: within the minute
    assert (await command(env, "/approvals", SRE_2, "pending")).status == 200
    _, ready = await get_json(env, "/readyz")
    kind = "server_error" if status == 500 else "rate_limited"
    await until(lambda: env.quorum.deps.failures.failing("vote replies (chat.postMessage)"))
    _, ready = await get_json(env, "/readyz")
    assert (ready["slack"], ready["slack_failure"]) == ("degraded", kind)
    await asyncio.sleep(2.0)
    lines = our_lines(caplog)
    assert 1 <= len(lines) <= 12, [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in lines)
    assert failures_of(await metrics(env), "chat.postMessage", kind) >= 1

    env.slack.recover_all()
    await env.slack.wait_for(
        "chat.postMessage", lambda c: c.ok and c.args.get("thread_ts") is not None
    )
    await until(card_shows(env, request_id, WEB_2))
    _, ready = await get_json(env, "/readyz")
    assert ready["slack"] == "ok"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_start_while_slack_is_down_then_learn_the_installation(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Start does not wait for Slack; bolt dispatches without asking it (no 500); a click
    before the installation is known is refused; once Slack answers, it is learnt and used."""
    monkeypatch.setattr(harness, "Quorum", FastQuorum)
    quorum_logs(caplog)
    port = _free_port()
    late = FakeSlack()  # the same workspace, listening only later
    late.set_usergroup("S0SRE", harness.SRE)
    extra = {"SLACK_API_URL": f"http://127.0.0.1:{port}/api/", "SLACK_BOT_TOKEN": late.token}
    async with running_env(db_url, extra_settings=extra) as env:
        status, data = await env.quorum.webhook(harness.body_for(callback_url=env.pipeline.url))
        assert status == 202, data
        request_id = str(data["id"])
        assert (await env.quorum.status(request_id))[0] == 200
        click = await env.quorum.click(ActionId.approve, WEB_2, request_id, "C0WEB", "1.2")
        assert click[0] == 200
        assert await voters(env, request_id) == []
        assert (await command(env, "/approvals", WEB_2, "help")).status == 200
        _, ready = await get_json(env, "/readyz")
        assert (ready["status"], ready["slack"]) == ("ready", "degraded")
        await asyncio.sleep(1.5)
        learning = [r for r in our_lines(caplog) if "installation" in r.getMessage()]
        assert 1 <= len(learning) <= 3, [r.getMessage() for r in learning]

        await late.start(port)
        try:
            await late.wait_for("auth.test", timeout=5.0)
            await until(lambda: env.quorum.deps.directory.known_installation() is not None)
            posted = await late.wait_for(
                "chat.postMessage", lambda c: c.ok and request_id in json.dumps(c.args)
            )
            channel, ts = posted[0].response["channel"], posted[0].response["ts"]
            await env.quorum.card_position(request_id)
            assert (await env.quorum.click(ActionId.approve, WEB_2, request_id, channel, ts))[
                0
            ] == 200
            assert await voters(env, request_id) == [WEB_2]
        finally:
            await late.stop()


async def test_stale_answers_only_for_lookups_that_are_not_fresh_and_only_for_ten_minutes() -> None:
    """The Directory over the fake Slack: while Slack is unreachable a cached users.info answer
    serves a non-deciding check for up to STALE_IF_ERROR; a fresh (deciding) lookup fails."""
    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    async with FakeSlack() as slack:
        slack.set_usergroup("S0SRE", [SRE_1])
        health = SlackHealth(clock)
        async with aiohttp.ClientSession() as session:
            client = make_web_client(slack.token, slack.base_url, session=session)
            directory = SlackDirectory(client, clock, health=health)
            person = await directory.user(SRE_1)
            assert person is not None
            assert await directory.usergroup_members("S0SRE") == {SRE_1}
            await slack.go_down()
            clock.advance(STALE_IF_ERROR - timedelta(seconds=1))
            assert await directory.user(SRE_1) == person
            assert await directory.usergroup_members("S0SRE") == {SRE_1}
            with pytest.raises(ChatError) as fresh:
                await directory.user(SRE_1, fresh=True)
            assert fresh.value.error_code == "transport_error"
            clock.advance(timedelta(seconds=1))
            with pytest.raises(ChatError):
                await directory.user(SRE_1)
            # The status API's view: the last listing, however old, without asking.
            assert directory.known_usergroup_members("S0SRE") == {SRE_1}
            assert directory.known_usergroup_members("S0NONE") is None
            assert health.degraded_since == clock.now() - timedelta(seconds=1)  # the first
            assert health.failure_counts()[("users.info", "connection")] == 3
            await slack.come_back()
            assert await directory.user(SRE_1) == person
            assert health.degraded_since is None


def test_failure_log_writes_one_line_per_doubling_window(caplog: pytest.LogCaptureFixture) -> None:
    """A failure every second for ten minutes: a line at the first, then one per window
    (10 s, 20 s, 40 s, …) with the count and the retry time; one line when it recovers."""
    logger = logging.getLogger("bot.test_outage")
    caplog.set_level(logging.INFO, logger="bot")
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    failures = FailureLog()
    error = ChatError("chat.update", "transport_error")
    for second in range(600):
        now = start + timedelta(seconds=second)
        failures.failed(logger, "card sync", error, now, retry_at=now + timedelta(seconds=1))
        failures.failed(logger, "card sync", ValueError("secret=xoxb-1"), now)
    lines = [r.getMessage() for r in caplog.records]
    transport = [line for line in lines if "transport_error" in line]
    # 0, 10, 30, 70, 150, 310 s: windows of 10, 20, 40, 80, 160 s, then 320 s (past 600 s).
    assert len(transport) == 6
    assert transport[0] == (
        "card sync failed: Slack chat.update failed: transport_error "
        "(1 failure; next retry at 2026-03-02T09:00:01+00:00)"
    )
    assert transport[1] == (
        "card sync still failing: Slack chat.update failed: transport_error "
        "(11 failures since 2026-03-02T09:00:00+00:00, 10 since the last line; "
        "next retry at 2026-03-02T09:00:11+00:00)"
    )
    other = [line for line in lines if "ValueError" in line]
    assert len(other) == 6
    assert not any("xoxb" in line for line in lines)  # only the type of a non-Slack error
    first_other = next(r for r in caplog.records if "ValueError" in r.getMessage())
    assert first_other.exc_info is not None  # a possible bug: its traceback, once
    assert failures.failing("card sync")
    caplog.clear()
    failures.succeeded(logger, "card sync", start + timedelta(minutes=10))
    assert len(caplog.records) == 2
    assert not failures.failing("card sync")


def test_backoff_gate_doubles_up_to_its_cap() -> None:
    failures = FailureLog(retry_cap=timedelta(seconds=4))
    logger = logging.getLogger("bot.test_outage")
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    error = ChatError("chat.update", "transport_error")
    waits = []
    for _ in range(5):
        retry_at = failures.failed(logger, "sweep", error, now, backoff=True)
        assert retry_at is not None
        assert not failures.ready("sweep", now)
        assert failures.ready("sweep", retry_at)
        waits.append((retry_at - now).total_seconds())
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    # An answer about one object (not an outage) does not hold the sweep back.
    failures.succeeded(logger, "sweep", now)
    assert (
        failures.failed(
            logger, "sweep", ChatError("chat.update", "channel_not_found"), now, backoff=True
        )
        is None
    )
    assert failures.ready("sweep", now)
