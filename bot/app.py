"""The composition root: builds the database, clients, services and the aiohttp application.

Nothing is created at import time. `build_app` wires the routes; connections, the bolt app's
client session, the vote writer and the scheduler live in the app's cleanup context, which also
tears them down in order on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from bot import serving
from bot.background import BackgroundTasks
from bot.clock import SystemClock
from bot.domain.model import RecordedEvent
from bot.log_throttle import FailureLog
from bot.pipelines.base import InboundRequest, InboundUpdate, PipelineAdapter
from bot.pipelines.callback_keys import callback_signing
from bot.pipelines.egress import egress_session, host_of
from bot.pipelines.generic import GenericAdapter
from bot.pipelines.github import GitHubAdapter
from bot.pipelines.gitlab import GitLabAdapter
from bot.pipelines.jenkins import JenkinsNotifier
from bot.pipelines.signing import StandardWebhookVerifier
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
from bot.services.people import learn_installation
from bot.services.replays import SlackReplays, prune_slack_replays
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
from handlers.slack_health import SlackHealth
from handlers.slack_presenter import SlackAnnouncer
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: larger bodies get 413
DIRECTORY_TIMEOUT_SECONDS = 2  # users.info / usergroups.users.list on the click path


@dataclass(frozen=True, slots=True)
class Intervals:
    """Seconds between sweeps (each can also be woken at once)."""

    announce: float = 2.0
    requesters: float = 15.0
    deliveries: float = 1.0
    timers: float = 5.0
    messages: float = 1.0
    # The longest pause between tries while Slack is down (sweeps backing off, learning the
    # installation at start): how late, at most, Quorum notices Slack is back.
    slack_retry_cap: float = 60.0


@dataclass(slots=True)
class Runtime:
    """What the cleanup context built; routes reach it through the app."""

    database: SqlDatabase
    deps: Deps
    voting: Voting
    scheduler: Scheduler
    http: aiohttp.ClientSession
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    replays: SlackReplays | None = None  # signed Slack requests taken (bot/services/replays.py)


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
    egress_resolver: AbstractResolver | None = None,
) -> web.Application:
    """The aiohttp application with every route; connections open in its startup phase.

    `egress_resolver` resolves the names of webhook-named URLs before the egress policy checks
    the addresses (default: aiohttp's resolver; tests pass a fake DNS)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    now_clock: Clock = clock or SystemClock()
    every = intervals or Intervals()
    bot_token = _secret(settings.slack_bot_token, "SLACK_BOT_TOKEN")
    signing_secret = _secret(settings.slack_signing_secret, "SLACK_SIGNING_SECRET")
    sessions: list[aiohttp.ClientSession] = []  # filled at startup; adapters read it lazily

    def http() -> aiohttp.ClientSession:
        return sessions[0]

    # URLs a webhook names (callback_url, Jenkins input_url) go through sessions of their own,
    # whose resolver applies QUORUM_EGRESS_ALLOW to every address (bot/pipelines/egress.py).
    egress = settings.egress_policy
    jenkins_egress = egress.with_hosts(  # JENKINS_URL's host is the operator's own Jenkins
        [host_of(settings.jenkins_url)] if settings.jenkins_url else []
    )
    egress_sessions: dict[str, aiohttp.ClientSession] = {}

    def callback_http() -> aiohttp.ClientSession:
        return egress_sessions["callbacks"]

    def jenkins_http() -> aiohttp.ClientSession:
        return egress_sessions["jenkins"]

    slack_client = make_web_client(bot_token, settings.slack_api_url)
    slack_health = SlackHealth(now_clock)  # every Slack call's outcome: /readyz, /metrics
    retry_cap = timedelta(seconds=every.slack_retry_cap)
    failures = FailureLog(retry_cap=retry_cap)
    chat = SlackChat(slack_client, slack_health)
    # The message queue waits out 429s itself (durably, per channel), so its client must not.
    queue_client = make_web_client(bot_token, settings.slack_api_url, rate_limit_retries=0)
    announcer = SlackAnnouncer(chat, now_clock)
    # Who clicked is asked while Slack waits for our answer (3 s): the directory's client never
    # waits out a 429 or retries a dropped connection, and gives up after 2 s; a lookup that
    # fails is answered from a recent cache or refused (fail closed), never late.
    directory_client = make_web_client(
        bot_token,
        settings.slack_api_url,
        rate_limit_retries=0,
        connection_retries=0,
        timeout=DIRECTORY_TIMEOUT_SECONDS,
    )
    directory = SlackDirectory(directory_client, now_clock, health=slack_health, failures=failures)
    signing = callback_signing(
        key_file=settings.quorum_callback_signing_key_file,
        secrets=settings.callback_secrets,
        ephemeral=settings.ephemeral_callback_key,
        now=now_clock.now(),
    )
    for key in signing.keys if signing.ephemeral else ():
        log.warning(
            "QUORUM_DEV: callbacks are signed with an ephemeral Ed25519 key %s, public key %s "
            "(also at GET /api/v1/keys); it changes at every start, so set "
            "QUORUM_CALLBACK_SIGNING_KEY_FILE outside local development",
            key.key_id,
            key.public_key,
        )
    generic = GenericAdapter(
        StandardWebhookVerifier(settings.webhook_secrets, clock=now_clock.now),
        signing.signer,
        callback_http,
        now_clock.now,
        egress=egress,
        jenkins_url=settings.jenkins_url,
    )
    adapters: dict[str, PipelineAdapter] = {generic.source: generic}
    notifiers: dict[str, PipelineNotifier] = {generic.source: generic}
    # Providers are wired only when their settings are present (docs/pipelines/*.md).
    github = GitHubAdapter.from_settings(settings, http, now_clock.now)
    gitlab = GitLabAdapter.from_settings(
        settings, http, policy.gitlab.represented_as, clock=now_clock.now
    )
    jenkins = JenkinsNotifier.from_settings(settings, jenkins_http)
    for provider in (github, gitlab):
        if provider is not None:
            adapters[provider.source] = notifiers[provider.source] = provider
    if jenkins is not None:
        notifiers[jenkins.source] = jenkins
    bolt = slack_events.build_bolt_app(
        slack_client, signing_secret, now_clock.now, directory.known_installation
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        sessions.append(session)
        egress_sessions["callbacks"] = egress_session(egress, resolver=egress_resolver)
        egress_sessions["jenkins"] = egress_session(jenkins_egress, resolver=egress_resolver)
        slack_client.session = session
        queue_client.session = session
        directory_client.session = session
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
            failures=failures,
        )
        voting = Voting(deps)
        deps.card_posted = voting.card_posted
        runtime = Runtime(
            database=database,
            deps=deps,
            voting=voting,
            scheduler=scheduler,
            http=session,
            replays=SlackReplays(database, now_clock),
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

        async def retention() -> None:
            await prune_webhook_log(deps)
            await prune_slack_replays(database, now_clock)

        # Every 5 minutes: Slack request keys are kept 15 minutes (their signature window).
        scheduler.every(Job.RETENTION, 300.0, retention)
        scheduler.every(Job.TIMERS, every.timers, TimersJob(deps, wake_timers).run)
        scheduler.every(Job.REQUESTERS, every.requesters, RequesterChecks(deps).run)
        sender = MessageSender(deps, SlackChat(queue_client, slack_health))
        scheduler.every(Job.MESSAGES, every.messages, sender.send_due)
        scheduler.start()
        # Who Quorum is in Slack, asked until Slack answers; start never waits for it.
        learner = asyncio.create_task(
            learn_installation(deps, cap=retry_cap), name="quorum-learn-installation"
        )
        try:
            yield
        finally:
            learner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await learner
            await scheduler.shutdown()
            await voting.stop()
            if runtime.replays is not None:
                await runtime.replays.drain()
            await runtime.background.drain()
            await asyncio.sleep(0)  # let cancelled scheduler jobs finish unwinding
            await session.close()
            for egress_client in egress_sessions.values():
                await egress_client.close()
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

    health.register(
        app, ping_database=ping_database, policy_loaded=lambda: True, slack=slack_health
    )

    async def backlog_route() -> Backlog:
        return await backlog(app[RUNTIME].deps)

    metrics.register(app, get_backlog=backlog_route, slack_failures=slack_health.failure_counts)

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
        callback_keys=signing.keys,
    )
    slack_events.register(
        app,
        bolt=bolt,
        signing_secret=signing_secret,
        now=now_clock.now,
        replays=lambda: app[RUNTIME].replays,
    )
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
    if settings.is_sqlite:
        asyncio.run(upgrade(settings.database_url_value))
    log.info("serving on http://%s:%d", settings.quorum_host, settings.quorum_port)
    limits = serving.limits_from(settings)  # before the app opens anything: its budget
    app = build_app(settings, policy)
    tune_gc_for_serving(app)
    serving.run(app, settings, limits)  # slow clients, keep-alive, descriptors: bot/serving.py
    log.info("stopped")
