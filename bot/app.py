"""The composition root: builds the database, clients, services and the aiohttp application.

Nothing is created at import time. `build_app` wires the routes; connections, the bolt app's
client session, the vote writer and the scheduler live in the app's cleanup context, which also
tears them down in order on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from aiohttp import web

from bot.background import BackgroundTasks
from bot.clock import SystemClock
from bot.domain.model import RecordedEvent
from bot.pipelines.base import InboundRequest, InboundUpdate, PipelineAdapter
from bot.pipelines.generic import GenericAdapter
from bot.pipelines.github import GitHubAdapter
from bot.pipelines.gitlab import GitLabAdapter
from bot.pipelines.jenkins import JenkinsNotifier
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier
from bot.policy import Policy
from bot.ports import Clock, PipelineNotifier
from bot.scheduler import Scheduler
from bot.services.announcing import announce
from bot.services.audit import request_trail
from bot.services.breakglass import REVIEW_JOB, remind_reviews
from bot.services.delivery import deliver_due
from bot.services.deps import Deps, Tuning
from bot.services.freezes import FREEZE_JOB, sync_frozen_requests
from bot.services.intake import Opened, open_request
from bot.services.jobs import Job
from bot.services.messaging import MessageSender
from bot.services.requesters import RequesterChecks
from bot.services.retention import prune_webhook_log
from bot.services.status import Backlog, RequestStatus, backlog, request_status
from bot.services.timers import TimersJob
from bot.services.updates import Applied, apply_update
from bot.services.voting import Voting
from bot.settings import Settings
from handlers import (
    api,
    health,
    metrics,
    slack_actions,
    slack_events,
    slash_commands,
    webhooks,
)
from handlers.slack_chat import SlackChat, make_web_client
from handlers.slack_directory import SlackDirectory
from handlers.slack_presenter import SlackAnnouncer
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: larger bodies get 413


@dataclass(frozen=True, slots=True)
class Intervals:
    """Seconds between sweeps (each can also be woken at once)."""

    announce: float = 2.0
    requesters: float = 15.0
    deliveries: float = 1.0
    timers: float = 5.0
    messages: float = 1.0


@dataclass(slots=True)
class Runtime:
    """What the cleanup context built; routes reach it through the app."""

    database: SqlDatabase
    deps: Deps
    voting: Voting
    scheduler: Scheduler
    http: aiohttp.ClientSession
    background: BackgroundTasks = field(default_factory=BackgroundTasks)


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)


def tuning_from(settings: Settings) -> Tuning:
    """The services' tuning as configured (tests pass their own `Tuning` to `build_app`)."""
    return Tuning(
        retry_window=settings.quorum_callback_retry_window,
        webhook_retention=settings.quorum_webhook_retention,
    )


def build_app(
    settings: Settings,
    policy: Policy,
    *,
    clock: Clock | None = None,
    tuning: Tuning | None = None,
    intervals: Intervals | None = None,
) -> web.Application:
    """The aiohttp application with every route; connections open in its startup phase."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    now_clock: Clock = clock or SystemClock()
    every = intervals or Intervals()
    bot_token = _secret(settings.slack_bot_token, "SLACK_BOT_TOKEN")
    signing_secret = _secret(settings.slack_signing_secret, "SLACK_SIGNING_SECRET")
    sessions: list[aiohttp.ClientSession] = []  # filled at startup; adapters read it lazily

    def http() -> aiohttp.ClientSession:
        return sessions[0]

    slack_client = make_web_client(bot_token, settings.slack_api_url)
    chat = SlackChat(slack_client)
    # The message queue waits out 429s itself (durably, per channel), so its client must not.
    queue_client = make_web_client(bot_token, settings.slack_api_url, rate_limit_retries=0)
    announcer = SlackAnnouncer(chat, now_clock)
    directory = SlackDirectory(slack_client, now_clock)
    callback_secret = settings.callback_secret
    generic = GenericAdapter(
        StandardWebhookVerifier(settings.webhook_secrets, clock=now_clock.now),
        StandardWebhookSigner(callback_secret) if callback_secret else None,
        http,
        now_clock.now,
    )
    adapters: dict[str, PipelineAdapter] = {generic.source: generic}
    notifiers: dict[str, PipelineNotifier] = {generic.source: generic}
    # Providers are wired only when their settings are present (docs/pipelines/*.md).
    github = GitHubAdapter.from_settings(settings, http, now_clock.now)
    gitlab = GitLabAdapter.from_settings(
        settings, http, policy.gitlab.represented_as, clock=now_clock.now
    )
    jenkins = JenkinsNotifier.from_settings(settings, http)
    for provider in (github, gitlab):
        if provider is not None:
            adapters[provider.source] = notifiers[provider.source] = provider
    if jenkins is not None:
        notifiers[jenkins.source] = jenkins
    bolt = slack_events.build_bolt_app(slack_client, signing_secret, now_clock.now)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        sessions.append(session)
        slack_client.session = session
        queue_client.session = session
        database = SqlDatabase(
            create_engine(
                settings.database_url_value,
                sqlite_inline_writes=settings.quorum_sqlite_inline_writes,
            )
        )
        scheduler = Scheduler()

        def wake_timers(delay: timedelta) -> None:
            scheduler.wake_in(Job.TIMERS, delay)

        deps = Deps(
            database=database,
            clock=now_clock,
            policy=policy,
            announcer=announcer,
            directory=directory,
            notifiers=notifiers,
            public_url=settings.public_url,
            tuning=tuning or tuning_from(settings),
            wake=scheduler.wake,
        )
        voting = Voting(deps)
        deps.card_posted = voting.card_posted
        runtime = Runtime(
            database=database, deps=deps, voting=voting, scheduler=scheduler, http=session
        )
        app[RUNTIME] = runtime
        slack_actions.register(
            bolt, voting=voting, announcer=announcer, background=runtime.background
        )
        slash_commands.register(
            bolt, deps=deps, voting=voting, chat=chat, background=runtime.background
        )
        await voting.start()
        # Woken after every vote batch; under a burst of votes one sweep a second serves them
        # all (Slack takes about one message a second per channel anyway).
        scheduler.every(Job.ANNOUNCE, every.announce, lambda: announce(deps), min_gap=1.0)
        scheduler.every(Job.DELIVERIES, every.deliveries, lambda: deliver_due(deps))
        scheduler.every(FREEZE_JOB, 10.0, lambda: sync_frozen_requests(deps))
        scheduler.every(REVIEW_JOB, 300.0, lambda: remind_reviews(deps))
        scheduler.every(Job.RETENTION, 3600.0, lambda: prune_webhook_log(deps))
        scheduler.every(Job.TIMERS, every.timers, TimersJob(deps, wake_timers).run)
        scheduler.every(Job.REQUESTERS, every.requesters, RequesterChecks(deps).run)
        sender = MessageSender(deps, SlackChat(queue_client))
        scheduler.every(Job.MESSAGES, every.messages, sender.send_due)
        scheduler.start()
        try:
            yield
        finally:
            await scheduler.shutdown()
            await voting.stop()
            await runtime.background.drain()
            await asyncio.sleep(0)  # let cancelled scheduler jobs finish unwinding
            await session.close()
            await database.dispose()

    app.cleanup_ctx.append(lifecycle)

    async def ping_database() -> None:
        await app[RUNTIME].database.ping()

    async def open_request_route(inbound: InboundRequest) -> Opened:
        runtime = app[RUNTIME]
        opened = await open_request(runtime.deps, inbound)
        if opened.request is not None:
            runtime.voting.seed(opened.request)  # its first clicks need not read it
        return opened

    async def status_route(request_id: str) -> RequestStatus:
        return await request_status(app[RUNTIME].deps, request_id)

    health.register(app, ping_database=ping_database, policy_loaded=lambda: True)

    async def backlog_route() -> Backlog:
        return await backlog(app[RUNTIME].deps)

    metrics.register(app, get_backlog=backlog_route)

    async def apply_update_route(update: InboundUpdate) -> Applied:
        return await apply_update(app[RUNTIME].deps, update)

    webhooks.register(
        app,
        adapters=adapters,
        open_request=open_request_route,
        public_url=settings.public_url,
        apply_update=apply_update_route,
    )

    async def trail_route(request_id: str) -> Sequence[RecordedEvent]:
        return await request_trail(app[RUNTIME].database, request_id)

    api.register(
        app,
        api_token=_optional(settings.quorum_api_token),
        get_status=status_route,
        get_trail=trail_route,
    )
    slack_events.register(app, bolt=bolt, signing_secret=signing_secret, now=now_clock.now)
    return app


# Young-generation threshold of the serving process: a click's objects live for the ~30 ms it is
# in flight, so with CPython's default (700) each of the ~50 in-flight clicks is walked by many
# young collections and then promoted; under a burst that cost ~60 µs per click. Objects freed by
# reference counting never reach a collection, so a larger threshold costs little memory.
SERVING_GC_THRESHOLD = (50_000, 20, 10)


def tune_gc_for_serving(app: web.Application) -> None:
    """After start-up, move every object alive then (modules, the policy, clients) out of the
    garbage collector's reach (`gc.freeze`): a full collection then walks only what requests
    created, instead of pausing the event loop for ~100 ms under load; and collect the young
    generation less often (`SERVING_GC_THRESHOLD`). For the serving process only; a process that
    builds many apps (the tests) would keep each one's garbage forever."""

    async def freeze(_app: web.Application) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*SERVING_GC_THRESHOLD)

    app.on_startup.append(freeze)


def _secret(value: object, name: str) -> str:
    from pydantic import SecretStr

    if not isinstance(value, SecretStr):
        raise ValueError(f"{name} is required to build the app")
    return value.get_secret_value()


def _optional(value: object) -> str | None:
    from pydantic import SecretStr

    return value.get_secret_value() if isinstance(value, SecretStr) else None


def serve(settings: Settings, policy: Policy) -> None:
    """Run until SIGINT/SIGTERM; applies migrations first on SQLite."""
    for name in settings.uses_dev_values():
        log.warning(
            "LOCAL DEVELOPMENT VALUE in use for %s (QUORUM_DEV=1); not for production", name
        )
    if settings.jenkins_user and not settings.jenkins_url:
        log.warning(
            "JENKINS_URL is not set: Jenkins credentials go to whatever input_url a signed "
            "pipeline names; set JENKINS_URL to pin them to your Jenkins"
        )
    if settings.is_sqlite:
        asyncio.run(upgrade(settings.database_url_value))
    log.info("serving on http://%s:%d", settings.quorum_host, settings.quorum_port)
    app = build_app(settings, policy)
    tune_gc_for_serving(app)
    web.run_app(
        app,
        host=settings.quorum_host,
        port=settings.quorum_port,
        print=None,
        access_log=None,
        shutdown_timeout=10.0,
    )
    log.info("stopped")
