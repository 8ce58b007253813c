"""Break glass: a release manager overrides a freeze (or the wait for quorum) on one request by
adding the policy's extra rules, never by skipping approval; then a post-incident review is due,
with reminders to the release managers until someone records it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bot.domain import events, mrkdwn
from bot.domain.decisions import apply_outcome
from bot.domain.errors import DomainError, RequestNotFound
from bot.domain.model import ApprovalRequest, OutgoingMessage, Rule
from bot.domain.mrkdwn import md
from bot.domain.quorum import tally
from bot.domain.text import control_character_refusal, is_blank, visible
from bot.domain.when import describe
from bot.policy import Policy
from bot.routing import break_glass_rules
from bot.services.decisions import record_decision
from bot.services.deps import Deps
from bot.services.freezes import is_release_manager, policy_zone, require_release_manager
from bot.services.ids import new_id
from bot.services.jobs import Job
from bot.services.people import SlackUnavailable, refusal_for
from bot.services.teams import request_team_members, team_members
from bot.services.timers import with_reached_escalations

# Review reminders go out once per period until the review is recorded.
REMINDER_PERIOD = timedelta(days=1)
REVIEW_JOB = Job.REVIEWS


def extra_rules(
    policy: Policy, request: ApprovalRequest, *, broken_by: str | None = None
) -> tuple[Rule, ...]:
    """The policy's break-glass rules for `request` (`from: owner` resolved as routing does).
    Whoever breaks glass may not fill them: the extra approval must come from someone else."""
    return break_glass_rules(policy, owner_team=request.owner_team, broken_by=broken_by)


async def may_break_glass(deps: Deps, request_id: str, actor: str) -> ApprovalRequest:
    """The request, if `actor` may break glass on it now; else DomainError saying why."""
    glass = deps.policy.break_glass
    if glass is None:
        raise DomainError("Break glass is not enabled in the policy (no `break_glass:` section).")
    members = await team_members(deps, [glass.allowed])
    if actor not in members.get(glass.allowed, frozenset()):
        raise DomainError(f"Only members of {glass.allowed} may break glass.")
    try:  # who Slack says the release manager is, asked now: break glass fails closed
        why = await refusal_for(deps, actor, fresh=True)
    except SlackUnavailable:
        raise DomainError(
            "Quorum could not check with Slack who you are, so glass was not broken. "
            "Try again in a minute."
        ) from None
    if why is not None:
        raise DomainError(md("{} Glass was not broken.", why))
    async with deps.database.unit_of_work(read_only=True) as uow:
        request = await uow.requests.get(request_id)
    if request is None:
        raise RequestNotFound(request_id)
    _check_open(request)
    return request


def _check_open(request: ApprovalRequest) -> None:
    if not request.state.is_open:
        raise DomainError(f"Request {request.id} is already {request.state}; nothing to override.")
    if request.break_glass:
        raise DomainError(f"Glass was already broken on request {request.id}.")


async def break_glass(
    deps: Deps,
    *,
    request_id: str,
    actor: str,
    reason: str,
    forget: Callable[[str], None] = lambda _rid: None,
) -> ApprovalRequest:
    """Add the extra rules, lift any freeze for this request, open the review, announce it
    loudly in the channel; all in one transaction. `forget(request_id)` drops cached copies."""
    await may_break_glass(deps, request_id, actor)
    glass = deps.policy.break_glass
    assert glass is not None  # may_break_glass checked
    if (refused := control_character_refusal("The reason", reason)) is not None:
        raise DomainError(refused)
    reason = reason.strip()
    # Judged on what a reader sees: zero-width characters are no reason.
    if glass.requires_reason and len(visible(reason)) < 3:
        raise DomainError("Breaking glass needs a reason: say why this cannot wait.")
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        request = await uow.requests.get_for_update(request_id)
        if request is None:
            raise RequestNotFound(request_id)
        _check_open(request)
        added = tuple(
            r
            for r in extra_rules(deps.policy, request, broken_by=actor)
            if r.name not in {existing.name for existing in request.rules}
        )
        # An escalation that already fired and names a break-glass rule (`for_rules`) widens it
        # as it would have, had the rule been there; unnamed ones stay the specialists' own.
        added = with_reached_escalations(deps.policy, request, added)
        request.rules = (*request.rules, *added)
        request.break_glass = True
        if request.frozen_until is not None:
            request.frozen_until = None
            request.sla_started_at = now
            request.next_due_at = now
        if glass.review_within is not None:
            request.review_due_at = now + glass.review_within
        votes = list(await uow.votes.list_for(request.id))
        eligible = await request_team_members(deps, request)  # escalated teams count too
        outcome = tally(request.rules, eligible, votes, request.reject_mode)
        await uow.events.append(events.breakglass_invoked(request.id, actor, reason, added, now))
        if apply_outcome(request, outcome, now):
            await record_decision(deps, uow, request, votes, outcome, now)
        await uow.requests.save(request)
        needs = ", ".join(f"{r.name} ({r.approvals} from {r.team})" for r in added) or "none"
        zone = policy_zone(deps.policy)
        due = (
            f" Post-incident review due {describe(request.review_due_at, zone, now)}."
            if request.review_due_at is not None
            else ""
        )
        await uow.messages.add(
            OutgoingMessage(
                id=new_id("msg", now),
                dedupe_key=f"breakglass:{request.id}",
                channel=request.channel,
                thread_ts=None,
                text=md(
                    "{} :rotating_light: *BREAK GLASS* by {} on {} ({}): {}. The freeze is "
                    "overridden for this request; extra approvals required: {}.{}",
                    mrkdwn.HERE,
                    mrkdwn.user(actor),
                    f"{request.service or 'an unowned service'} → {request.environment}"
                    f"{' ' + request.details.version if request.details.version else ''}",
                    mrkdwn.code(request.id),
                    reason,
                    needs,
                    due,
                ),
                created_at=now,
                not_before=now,
                request_id=request.id,
            )
        )
        await uow.commit()
    forget(request.id)
    deps.wake(Job.ANNOUNCE)
    deps.wake(Job.MESSAGES)
    deps.wake(Job.DELIVERIES)
    return request


async def record_review(
    deps: Deps, *, request_id: str, actor: str, summary: str
) -> ApprovalRequest:
    await require_release_manager(deps, actor, "record a post-incident review")
    if (refused := control_character_refusal("The summary", summary)) is not None:
        raise DomainError(refused)
    if is_blank(summary):
        raise DomainError(
            "A post-incident review needs a summary: say what happened and what follows from it."
        )
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        request = await uow.requests.get_for_update(request_id)
        if request is None:
            raise RequestNotFound(request_id)
        if not request.break_glass:
            raise DomainError(
                f"Request {request_id} did not break glass; there is nothing to review."
            )
        if request.reviewed_at is not None:
            raise DomainError(f"The review of {request_id} was already recorded.")
        breakers = {
            e.actor
            for e in await uow.events.list_for(request_id)
            if e.kind == events.EventKind.BREAKGLASS_INVOKED
        }
        if actor in breakers:
            raise DomainError(
                f"You broke glass on {request_id}, so its post-incident review must be recorded "
                "by another release manager."
            )
        if not breakers:  # the trail must say who broke glass; without it nobody can be ruled out
            raise DomainError(
                f"The audit trail of {request_id} does not say who broke glass, so Quorum cannot "
                "tell whether you may review it; ask an administrator to check the trail."
            )
        request.reviewed_at = now
        await uow.requests.save(request)
        await uow.events.append(events.review_recorded(request_id, actor, summary.strip(), now))
        await uow.commit()
    deps.wake(Job.ANNOUNCE)
    return request


async def reviews_open(deps: Deps, limit: int = 50) -> list[ApprovalRequest]:
    async with deps.database.unit_of_work(read_only=True) as uow:
        return list(await uow.requests.list_reviews_open(limit))


async def remind_reviews(deps: Deps) -> int:
    """Queue one DM per release manager per period for each review not recorded yet (the dedupe
    key makes the sweep idempotent); returns how many were queued."""
    team = deps.policy.release_managers
    if team is None:
        return 0
    now = deps.clock.now()
    open_reviews = [r for r in await reviews_open(deps, deps.tuning.batch_size) if r.review_due_at]
    if not open_reviews:
        return 0
    managers = sorted((await team_members(deps, [team])).get(team, frozenset()))
    zone = policy_zone(deps.policy)
    queued = 0
    async with deps.database.unit_of_work() as uow:
        for request in open_reviews:
            period = _period(request, deps, now)
            due = request.review_due_at
            assert due is not None
            overdue = now >= due
            lead = ":warning: *Overdue* post-incident review" if overdue else "Post-incident review"
            text = md(
                "{} for the break-glass deployment of {} ({}), due {}. Record it with {}.",
                md(lead),
                f"{request.service or 'an unowned service'} → {request.environment}",
                mrkdwn.code(request.id),
                describe(due, zone, now),
                mrkdwn.code(f"/approvals review {request.id} <summary>"),
            )
            for manager in managers:
                added = await uow.messages.add(
                    OutgoingMessage(
                        id=new_id("msg", now),
                        dedupe_key=f"review:{request.id}:{manager}:{period}",
                        channel=manager,
                        dm=True,
                        text=text,
                        created_at=now,
                        not_before=now,
                        request_id=request.id,
                    )
                )
                queued += int(added)
        await uow.commit()
    if queued:
        deps.wake(Job.MESSAGES)
    return queued


def _period(request: ApprovalRequest, deps: Deps, now: datetime) -> int:
    glass = deps.policy.break_glass
    within = glass.review_within if glass is not None and glass.review_within else timedelta(0)
    assert request.review_due_at is not None
    invoked = request.review_due_at - within
    return max(0, int((now - invoked) / REMINDER_PERIOD))


__all__ = [
    "break_glass",
    "extra_rules",
    "is_release_manager",
    "may_break_glass",
    "record_review",
    "remind_reviews",
    "reviews_open",
]
