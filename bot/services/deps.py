"""What the use cases are given: ports, policy, clock and tuning (built by bot/app.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from bot.log_throttle import FailureLog
from bot.policy import Policy
from bot.ports import Announcer, Clock, Database, Directory, PipelineNotifier
from bot.services.pacing import SlackPacing


@dataclass(frozen=True, slots=True)
class Tuning:
    backoff_base: timedelta = timedelta(seconds=5)
    backoff_cap: timedelta = timedelta(hours=1)
    retry_window: timedelta = timedelta(hours=24)
    lease: timedelta = timedelta(seconds=60)  # a claimed delivery is retried after this on a crash
    batch_size: int = 100  # outbox rows / cards handled per sweep
    # How long an inbound webhook id is remembered (a redelivery within it opens nothing new).
    webhook_retention: timedelta = timedelta(days=8)


@dataclass(slots=True)
class Deps:
    database: Database
    clock: Clock
    policy: Policy
    announcer: Announcer
    directory: Directory
    notifiers: Mapping[str, PipelineNotifier]
    public_url: str
    tuning: Tuning = field(default_factory=Tuning)
    jitter: Callable[[], float] = random.random
    # Nudges a background job ("announce", "deliveries", …) to run now, not at its next sweep.
    wake: Callable[[str], None] = lambda _job: None
    # Told where a request's card was just posted (request id, channel, ts), once it is stored:
    # the vote path binds clicks to the card without reading it.
    card_posted: Callable[[str, str, str], None] = lambda _rid, _channel, _ts: None
    pacing: SlackPacing = field(default_factory=SlackPacing)
    # Repeated failures of one kind logged as one line per window, with backoff for sweeps.
    failures: FailureLog = field(default_factory=FailureLog)
