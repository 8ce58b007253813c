"""Whether Slack vouches for a person now: the one place the use cases ask (votes, break glass)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.domain.backoff import ceiling
from bot.domain.people import Installation, person_refusal
from bot.services.deps import Deps

log = logging.getLogger(__name__)

LEARNING = "learning the installation from Slack (auth.test)"


class SlackUnavailable(Exception):
    """Slack could not be asked; callers refuse (separation of duties fails closed)."""


async def installation(deps: Deps) -> Installation:
    try:
        return await deps.directory.installation()
    except Exception as exc:
        raise SlackUnavailable("auth.test") from exc


async def refusal_for(deps: Deps, user_id: str, *, fresh: bool = False) -> str | None:
    """None when Slack vouches for `user_id` (a full, active, human member of the installation's
    workspace or org); else the sentence why not. Raises SlackUnavailable."""
    where = await installation(deps)
    try:
        person = await deps.directory.user(user_id, fresh=fresh)
    except Exception as exc:
        raise SlackUnavailable("users.info") from exc
    return person_refusal(user_id, person, where)


LEARN_BASE = timedelta(seconds=1)
LEARN_CAP = timedelta(seconds=60)


async def learn_installation(
    deps: Deps, *, base: timedelta = LEARN_BASE, cap: timedelta = LEARN_CAP
) -> Installation:
    """At start, in the background: ask Slack who Quorum is (auth.test) until it answers, with
    backoff, logging repeated failures as one line per window. Start never waits for it; until
    it is learnt, clicks that need it are refused (fail closed)."""
    attempt = 0
    while True:
        try:
            learnt = await deps.directory.installation()
        except Exception as exc:
            attempt += 1
            now = deps.clock.now()
            delay = ceiling(attempt, base=min(base, cap), cap=cap)
            deps.failures.failed(log, LEARNING, exc, now, retry_at=now + delay)
            await asyncio.sleep(delay.total_seconds())
            continue
        deps.failures.succeeded(log, LEARNING, deps.clock.now())
        log.info("installation learnt: team %s, app %s", learnt.team_id, learnt.app_id)
        return learnt
