"""One running Quorum for a whole fuzz module, driven from synchronous hypothesis tests.

The app runs on an `asyncio.Runner` of its own: each example runs one request on it (the app's
background tasks run while it does). `observe` says, for one request, what it answered and
whether anything changed: rows of every table, the fake Slack's calls, callbacks at the fake
pipeline and calls at the fake GitHub and GitLab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from multidict import CIMultiDict
from yarl import URL

from tests.e2e.harness import API_TOKEN, POLICY, SIGNING_SECRET, WEBHOOK_SECRET, Env, running_env
from tests.fakes.github_api import APP_ID, AppKey, FakeGitHub
from tests.fakes.gitlab_api import API_TOKEN as GITLAB_API_TOKEN
from tests.fakes.gitlab_api import FakeGitLab

T = TypeVar("T")

GITHUB_SECRET = "gh-fuzz-secret-0123456789"
GITLAB_TOKEN = "gl-fuzz-token-0123456789"
GITLAB_SIGNING_SECRET = "whsec_ZnV6ei1naXRsYWItc2lnbmluZy1zZWNyZXQ="
SECRETS = (
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    API_TOKEN,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    GITLAB_SIGNING_SECRET,
    GITLAB_API_TOKEN,
)
TABLES = (
    "requests",
    "votes",
    "outbox",
    "events",
    "freezes",
    "delegations",
    "processed_webhooks",
    "messages",
)


def fuzz_policy() -> dict[str, Any]:
    """The e2e policy, with GitHub and GitLab deliveries (which carry no change ticket) able to
    open production requests."""
    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    policy["environments"]["production"]["require_change_ticket"] = False
    policy["identities"] = {**policy["identities"], "gitlab": {"root": "U0WEB1"}}
    return policy


_PENDING = (
    "SELECT count(*) FROM requests"
    " WHERE message_ts IS NULL OR coalesce(card_revision, -1) < revision",
    "SELECT count(*) FROM votes WHERE announced_at IS NULL",
    "SELECT count(*) FROM messages WHERE state = 'pending'",
    "SELECT count(*) FROM outbox WHERE state = 'pending'",
)


@dataclass(frozen=True)
class Snapshot:
    rows: Mapping[str, int]
    slack_calls: int
    callbacks: int
    provider_calls: int


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    changed: dict[str, tuple[object, object]]  # what differs between before and after
    leaks: tuple[str, ...] = ()  # where a configured secret showed: "answer", "log"

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.text[:300]!r}; changed: {self.changed}"


@dataclass(frozen=True)
class Outgoing:
    """One HTTP request, exactly as it goes on the wire (headers may repeat)."""

    method: str
    path: str
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str | None = None  # None: no Content-Type header at all


class LogTap(logging.Handler):
    """Every log line Quorum writes (its access log aside: the client chose the URL), with
    tracebacks, so that an example can be checked for secrets in the log."""

    LOGGERS = ("bot", "handlers", "storage", "slack_bolt", "slack_sdk", "aiohttp.server")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)

    def attach(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)

    def detach(self) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).removeHandler(self)
            logging.getLogger(name).setLevel(level)


class FuzzApp:
    def __init__(
        self,
        runner: asyncio.Runner,
        env: Env,
        db_path: Path,
        github: FakeGitHub,
        gitlab: FakeGitLab,
    ) -> None:
        self.runner = runner
        self.env = env
        self.db_path = db_path
        self.github = github
        self.gitlab = gitlab
        self._unsettled = True  # the previous request may still be causing work
        self.log = LogTap()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return self.runner.run(wrapped())

    @property
    def url(self) -> str:
        return self.env.quorum.url

    def snapshot(self) -> Snapshot:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            rows = {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # noqa: S608
        return Snapshot(
            rows=rows,
            slack_calls=len(self.env.slack.calls),
            callbacks=len(self.env.pipeline.received),
            # What Quorum asks of the providers (reviews, reports, approvals); reads such as
            # the GitHub run lookup change nothing.
            provider_calls=len(self.github.recorded) + len(self.gitlab.recorded),
        )

    def pending_work(self) -> int:
        """What the background tasks still have to do for Slack and the pipelines: cards
        behind their request, votes not announced, queued messages and callbacks."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return sum(int(db.execute(query).fetchone()[0]) for query in _PENDING)

    async def _settle(self) -> None:
        """Wait until the work an accepted request started (card posts and updates, replies,
        callbacks) is done and nothing changes over two polls (at most 5 s)."""
        last, stable = self.snapshot(), 0
        async with asyncio.timeout(5):
            while stable < 2:
                await asyncio.sleep(0.005)
                now = self.snapshot()
                stable = stable + 1 if now == last and not self.pending_work() else 0
                last = now

    async def _send(self, out: Outgoing) -> tuple[int, str]:
        http = self.env.quorum.http
        assert http is not None
        headers: CIMultiDict[str] = CIMultiDict(out.headers)
        skip: tuple[str, ...] = ()
        if out.content_type is None:
            skip = ("Content-Type",)
        else:
            headers.add("Content-Type", out.content_type)
        async with http.request(
            out.method,
            URL(f"{self.url}{out.path}", encoded=True),  # the path exactly as given
            data=out.body or None,
            headers=headers,
            skip_auto_headers=skip,
        ) as resp:
            return resp.status, await resp.text(errors="replace")

    def observe(self, out: Outgoing) -> Answer:
        """Send one request; what it answered and what it changed."""

        async def go() -> Answer:
            if self._unsettled:
                with contextlib.suppress(TimeoutError):  # still busy: a change will show it
                    await self._settle()
            before = self.snapshot()
            logged = len(self.log.lines)
            status, text = await self._send(out)
            after = self.snapshot()
            # Only an accepted write can leave work behind (a read never does).
            self._unsettled = status < 400 and out.method not in {"GET", "HEAD"}
            changed = _diff(before, after)
            if "slack_calls" in changed:  # say which: a refusal must make none
                calls = self.env.slack.calls[before.slack_calls : after.slack_calls]
                changed["slack_methods"] = ([], [c.method for c in calls])
            lines = "\n".join(self.log.lines[logged:])
            leaks = tuple(
                where
                for where, seen in (("answer", text), ("log", lines))
                if any(secret in seen for secret in SECRETS)
            )
            return Answer(status, text, changed, leaks)

        return self.run(go())


def _diff(before: Snapshot, after: Snapshot) -> dict[str, tuple[object, object]]:
    changed: dict[str, tuple[object, object]] = {}
    for table, count in before.rows.items():
        if after.rows[table] != count:
            changed[table] = (count, after.rows[table])
    if before.slack_calls != after.slack_calls:
        changed["slack_calls"] = (before.slack_calls, after.slack_calls)
    for name in ("callbacks", "provider_calls"):
        if getattr(before, name) != getattr(after, name):
            changed[name] = (getattr(before, name), getattr(after, name))
    return changed


def start_app(tmp: Path) -> Iterator[FuzzApp]:
    """The module fixture's body: Quorum with every inbound provider configured, on SQLite."""
    runner = asyncio.Runner()
    stack = AsyncExitStack()
    db_path = tmp / "fuzz.db"
    key = AppKey.generate()

    async def enter() -> FuzzApp:
        github = await stack.enter_async_context(FakeGitHub(key.public_pem))
        gitlab = await stack.enter_async_context(FakeGitLab())
        settings = {
            "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_PRIVATE_KEY": key.private_pem,
            "GITHUB_API_URL": github.base_url,
            "GITLAB_WEBHOOK_TOKEN": GITLAB_TOKEN,
            "GITLAB_WEBHOOK_SIGNING_SECRET": GITLAB_SIGNING_SECRET,
            "GITLAB_URL": gitlab.base_url,
            "GITLAB_TOKEN": GITLAB_API_TOKEN,
        }
        env = await stack.enter_async_context(
            running_env(
                f"sqlite+aiosqlite:///{db_path}", policy=fuzz_policy(), extra_settings=settings
            )
        )
        return FuzzApp(runner, env, db_path, github, gitlab)

    with runner:
        app = runner.run(enter())
        app.log.attach()
        try:
            yield app
        finally:
            app.log.detach()
            runner.run(stack.aclose())
