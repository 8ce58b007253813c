"""Settle who requested a deployment when Slack could not be asked at intake.

While `Requester.checking` is set no approval counts (bot/domain/eligibility.py). Each sweep
asks Slack again (`users.lookupByEmail`); a request whose lookup keeps failing is tried again at
the next sweep, with backoff per request in this process. Once Slack answers, the requester is
mapped, or the environment's `unmapped_requester` policy applies (rejected, or one more rule).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from bot.domain import events
from bot.domain.backoff import ceiling
from bot.domain.model import ApprovalRequest, RequestState
from bot.domain.requesters import UNMAPPED_RULE, unmapped_reason, unmapped_rule
from bot.services.decisions import record_decision
from bot.services.deps import Deps
from bot.services.jobs import Job

log = logging.getLogger(__name__)

_BASE = timedelta(seconds=15)
_CAP = timedelta(minutes=10)
LOOKUP = "requester checks (users.lookupByEmail)"


class RequesterChecks:
    """The sweep, with each request's failed attempts (in memory: a restart retries at once)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._failures: dict[str, tuple[int, datetime]] = {}

    async def run(self) -> int:
        """Settle what Slack answers for now; returns how many requests were settled."""
        deps = self._deps
        now = deps.clock.now()
        async with deps.database.unit_of_work(read_only=True) as uow:
            waiting = [r for r in await uow.requests.list_open() if r.requester.checking]
        settled = 0
        for request in waiting:
            failures, next_at = self._failures.get(request.id, (0, now))
            if next_at > now or not request.requester.email:
                continue
            try:
                user = await deps.directory.user_by_email(request.requester.email)
            except Exception as exc:
                failures += 1
                delay = ceiling(failures, base=_BASE, cap=_CAP)
                self._failures[request.id] = (failures, now + delay)
                deps.failures.failed(log, LOOKUP, exc, now, retry_at=now + delay)
                continue
            deps.failures.succeeded(log, LOOKUP, deps.clock.now())
            self._failures.pop(request.id, None)
            settled += await settle(deps, request.id, user)
        return settled


async def settle(deps: Deps, request_id: str, user: str | None) -> int:
    """Record Slack's answer (`user` None: nobody has that email) on a request still checking."""
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        request = await uow.requests.get_for_update(request_id)
        if request is None or not request.state.is_open or not request.requester.checking:
            return 0
        request.requester = replace(request.requester, slack_user=user, checking=False)
        decided = _apply_policy(deps, request, now) if user is None else False
        await uow.events.append(
            events.requester_resolved(request.id, user, "mapped" if user else "unmapped", now)
        )
        if decided:
            await record_decision(
                deps, uow, request, list(await uow.votes.list_for(request.id)), None, now
            )
        await uow.requests.save(request)
        await uow.commit()
    deps.wake(Job.ANNOUNCE)
    if decided:
        deps.wake(Job.DELIVERIES)
    return 1


def _apply_policy(deps: Deps, request: ApprovalRequest, now: datetime) -> bool:
    """The environment's `unmapped_requester` policy on a request found to be unmapped; True
    when it rejected the request."""
    env = deps.policy.environment(request.environment)
    if request.self_approval:
        return False
    if env is not None and not isinstance(env.unmapped_requester, str):
        if all(rule.name != UNMAPPED_RULE for rule in request.rules):
            team = env.unmapped_requester.require_approval_from
            request.rules = (*request.rules, unmapped_rule(team))
        return False
    request.state = RequestState.REJECTED
    request.decided_at = now
    request.decision_reason = unmapped_reason(request.requester, request.environment)
    request.next_due_at = None
    return True
