"""SLA timers: fire due reminders, escalations, expiry and auto-approval exactly once; re-arm.

Deadlines live in `requests.next_due_at`, computed by bot/domain/sla.py from the policy and the
request's history (`sla_started_at`, `reminders_sent`, `escalation_level`). The scheduler only
wakes `run_due`; each step is claimed by re-reading the row locked and saving it under its
revision, so a concurrent process, a vote or a replayed sweep can never fire a step twice. The
Slack messages a step causes are queued (`messages`, with dedupe keys) in the step's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain import events, mrkdwn
from bot.domain.ballot import Ballot
from bot.domain.model import (
    ApprovalRequest,
    OutgoingMessage,
    RequestState,
    Risk,
    Rule,
    Vote,
    VoteKind,
)
from bot.domain.mrkdwn import Mrkdwn, md
from bot.domain.quorum import is_eligible, tally, would_help
from bot.domain.sla import (
    BusinessHours,
    ExpireAction,
    SlaSpec,
    Step,
    StepKind,
    next_notable_step,
    next_step,
    next_timer_text,
    widen,
    widen_reached,
    widened_names,
)
from bot.log_throttle import is_slack_error
from bot.policy import WEEKDAYS, OnExpire, Policy
from bot.ports import ConcurrencyError, UnitOfWork
from bot.services import progress
from bot.services.decisions import record_decision
from bot.services.deps import Deps
from bot.services.ids import new_id
from bot.services.jobs import Job
from bot.services.teams import team_members

log = logging.getLogger(__name__)

TIMERS = "timers (team members from Slack)"

# A sweep takes at most this many rounds of due requests: several overdue steps of one request
# (after an outage) fire one per round, in order, without waiting for the next sweep.
_MAX_ROUNDS = 10
_REARM_CHUNK = 500


# --- the policy's SLA as a domain spec ---------------------------------------------------------


def sla_spec(policy: Policy, request: ApprovalRequest) -> SlaSpec | None:
    """The SLA of `request`'s environment under the current policy (None: no timers).

    Auto-approval applies only to low-risk requests, as routing decided when it was opened.
    """
    env = policy.environment(request.environment)
    if env is None or env.sla is None:
        return None
    sla = env.sla
    hours = None
    if sla.business_hours is not None:
        bh = sla.business_hours
        hours = BusinessHours(
            days=frozenset(WEEKDAYS.index(day) for day in bh.days),
            start=bh.start,
            end=bh.end,
            zone=bh.timezone or policy.timezone,
        )
    approve = sla.on_expire is OnExpire.APPROVE and request.risk is Risk.LOW
    return SlaSpec(
        remind_after=sla.remind_after,
        escalate=tuple(step.ladder_step(env) for step in sla.escalate),
        expire_after=sla.expire_after,
        on_expire=ExpireAction.APPROVE if approve else ExpireAction.REJECT,
        business_hours=hours,
    )


def _plan(policy: Policy, request: ApprovalRequest, now: datetime) -> Step | None:
    if not request.state.is_open:
        return None
    return next_step(
        sla_spec(policy, request),
        request.sla_started_at,
        request.reminders_sent,
        request.escalation_level,
        now,
    )


def with_reached_escalations(
    policy: Policy, request: ApprovalRequest, rules: Sequence[Rule]
) -> tuple[Rule, ...]:
    """`rules`, about to be added to `request` (e.g. by break-glass), widened by the escalation
    steps that already fired on it, as the sweep widened the rules it had then."""
    spec = sla_spec(policy, request)
    if spec is None or request.escalation_level <= 0:
        return tuple(rules)
    return widen_reached(rules, spec.escalate, request.escalation_level)


def start_sla(policy: Policy, request: ApprovalRequest, at: datetime) -> None:
    """Start `request`'s SLA clock at `at` and arm its first timer."""
    request.sla_started_at = at
    step = _plan(policy, request, at)
    request.next_due_at = step.due_at if step is not None else None


def timer_note(
    policy: Policy, request: ApprovalRequest, now: datetime, *, relative: bool = True
) -> str | None:
    """The next timer in words for the card (`relative=False`) and the status API."""
    if not request.state.is_open:
        return None
    return next_timer_text(
        sla_spec(policy, request),
        request.sla_started_at,
        request.reminders_sent,
        request.escalation_level,
        now,
        relative=relative,
        rules=request.rules,
    )


def next_timer_at(policy: Policy, request: ApprovalRequest, now: datetime) -> datetime | None:
    """When the timer `timer_note` describes fires."""
    if not request.state.is_open:
        return None
    step = next_notable_step(
        sla_spec(policy, request),
        request.sla_started_at,
        request.reminders_sent,
        request.escalation_level,
        now,
    )
    return step.due_at if step is not None else None


# --- the sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    request_id: str
    kind: StepKind
    decided: bool


async def run_due(deps: Deps) -> int:
    """Fire every step due now. Returns how many steps this process fired."""
    now = deps.clock.now()
    fired: list[Fired] = []
    for _ in range(_MAX_ROUNDS):
        async with deps.database.unit_of_work(read_only=True) as uow:
            due = list(await uow.requests.list_due(now, deps.tuning.batch_size))
        if not due:
            break
        progressed = 0
        for request in due:
            try:
                outcome = await _fire(deps, request, now)
            except ConcurrencyError:
                log.info("timer of %s lost a race; the next sweep re-evaluates it", request.id)
                continue
            except Exception as exc:
                if not is_slack_error(exc):
                    raise
                # Slack could not say who is in a team: the next sweep tries again.
                deps.failures.failed(log, TIMERS, exc, deps.clock.now())
                continue
            deps.failures.succeeded(log, TIMERS, deps.clock.now())
            progressed += 1
            if outcome is not None:
                fired.append(outcome)
        if progressed == 0:
            break
    if fired:
        deps.wake(Job.ANNOUNCE)
        deps.wake(Job.MESSAGES)
        if any(f.decided for f in fired):
            deps.wake(Job.DELIVERIES)
    return len(fired)


async def next_due(deps: Deps) -> datetime | None:
    """The earliest armed timer of any request."""
    async with deps.database.unit_of_work(read_only=True) as uow:
        return await uow.requests.next_due_at()


async def sweep(deps: Deps, wake_in: Callable[[timedelta], None] | None = None) -> int:
    """The "timers" job: fire what is due, then ask to be woken when the next timer is due
    (the periodic sweep still runs, so a lost wake-up only delays a step until then)."""
    count = await run_due(deps)
    if wake_in is not None:
        earliest = await next_due(deps)
        if earliest is not None:
            wake_in(max(earliest - deps.clock.now(), timedelta(0)))
    return count


class TimersJob:
    """The "timers" job: its first run re-arms every open request (in the job, not in start-up,
    so an unreachable database delays timers instead of failing the start), then each run sweeps."""

    def __init__(self, deps: Deps, wake_in: Callable[[timedelta], None] | None = None) -> None:
        self._deps = deps
        self._wake_in = wake_in
        self.rearmed: Rearmed | None = None

    async def run(self) -> int:
        if self.rearmed is None:
            self.rearmed = await rearm(self._deps)
            log.info(
                "re-armed the timers of %d open requests (%d moved)",
                self.rearmed.open_requests,
                self.rearmed.changed,
            )
        return await sweep(self._deps, self._wake_in)


async def _people(
    deps: Deps, request: ApprovalRequest, spec: SlaSpec | None
) -> Mapping[str, frozenset[str]]:
    """Members of the rule teams, of the teams they are widened by and of every team the ladder
    can escalate to (a step about to fire widens rules by it), read before the row is locked
    (the Directory may call Slack)."""
    teams = {team for rule in request.rules for team in (rule.team, *rule.widened_by)}
    ladder = {step.team for step in spec.escalate} if spec is not None else set()
    return await team_members(deps, teams | ladder)


async def _fire(deps: Deps, seen: ApprovalRequest, now: datetime) -> Fired | None:
    spec = sla_spec(deps.policy, seen)
    people = await _people(deps, seen, spec)
    async with deps.database.unit_of_work() as uow:
        request = await uow.requests.get_for_update(seen.id)
        if request is None or request.next_due_at is None or request.next_due_at > now:
            return None  # another process (or a re-arm) moved it meanwhile
        step = _plan(deps.policy, request, now)
        fired: Fired | None = None
        if step is not None and step.due_at <= now:
            votes = list(await uow.votes.list_for(request.id))
            await _apply(deps, uow, request, votes, step, people, now)
            fired = Fired(request.id, step.kind, decided=not request.state.is_open)
        after = _plan(deps.policy, request, now)
        request.next_due_at = after.due_at if after is not None else None
        await uow.requests.save(request)
        await uow.commit()
    if fired is not None:
        log.info("timer %s fired for %s", fired.kind.value, fired.request_id)
    return fired


async def _apply(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    votes: Sequence[Vote],
    step: Step,
    eligible: Mapping[str, frozenset[str]],
    now: datetime,
) -> None:
    if step.kind is StepKind.REMIND:
        users = _to_remind(request, votes, eligible)
        request.reminders_sent = step.reminder
        for user in users:
            await _queue(
                uow,
                now,
                key=f"remind:{request.id}:{step.reminder}:{user}",
                request=request,
                channel=user,
                dm=True,
                text=_reminder_text(deps.policy, request, now),
            )
        await uow.events.append(events.reminder_sent(request.id, users, now))
    elif step.kind is StepKind.ESCALATE:
        assert step.team is not None
        spec = sla_spec(deps.policy, request)
        assert spec is not None  # the step was planned from it
        rung = spec.escalate[step.level - 1]
        # The step's team may fill only the rules it names (by default the owner's), never a
        # specialist sign-off it does not name: stored on the rules, so every reader agrees.
        widened = widened_names(request.rules, rung)
        request.rules = widen(request.rules, rung)
        request.escalation_level = step.level
        await uow.events.append(
            events.escalation_fired(request.id, step.level, step.team, now, widened)
        )
        await _announce_escalation(deps, uow, request, step, widened, now)
        current = tally(request.rules, eligible, votes, request.reject_mode)
        await progress.on_escalation(deps, uow, request, current, now)  # pipeline status report
    else:
        await _decide(deps, uow, request, votes, eligible, step, now)


def _to_remind(
    request: ApprovalRequest, votes: Sequence[Vote], eligible: Mapping[str, frozenset[str]]
) -> list[str]:
    """Eligible people who have not voted and whose approval would still fill a slot."""
    votes = Ballot.of(votes)  # indexed once for the many would_help questions below
    voted = {vote.voter for vote in votes} | {vote.clicked_by for vote in votes}
    candidates = sorted(
        frozenset().union(
            *(
                eligible.get(team, frozenset())
                for rule in request.rules
                for team in (rule.team, *rule.widened_by)
            )
        )
    )
    requester = request.requester.slack_user
    return [
        user
        for user in candidates
        if user not in voted
        and not (user == requester and not request.self_approval)
        and would_help(request.rules, eligible, votes, user)
    ]


def _card_link(request: ApprovalRequest) -> Mrkdwn:
    # Slack's archive URL needs no API call (chat.getPermalink would be one per reminder) and
    # redirects to the message in whichever workspace the reader is signed in to.
    channel = mrkdwn.channel(request.channel)
    if request.message_ts is None:
        return channel
    ts = request.message_ts.replace(".", "")
    url = f"https://slack.com/archives/{request.channel}/p{ts}"
    return md("{} in {}", mrkdwn.link(url, "the card"), channel)


def _subject(request: ApprovalRequest) -> Mrkdwn:
    """`storefront → production v1.4.2`, escaped (service and version come from the webhook)."""
    what = request.service or "a deployment"
    version = f" {request.details.version}" if request.details.version else ""
    return mrkdwn.escape(f"{what} → {request.environment}{version}")


def _requester(request: ApprovalRequest) -> Mrkdwn:
    slack_user = request.requester.slack_user
    return mrkdwn.user(slack_user) if slack_user else mrkdwn.escape(request.requester.display)


def _reminder_text(policy: Policy, request: ApprovalRequest, now: datetime) -> Mrkdwn:
    timer = timer_note(policy, request, now)
    tail = md(" It {}.", timer) if timer else ""
    return md(
        "Reminder: {} (requested by {}) is waiting for your approval: {}.{}",
        _subject(request),
        _requester(request),
        _card_link(request),
        tail,
    )


async def _announce_escalation(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    step: Step,
    widened: Sequence[str],
    now: datetime,
) -> None:
    assert step.team is not None
    team = deps.policy.team(step.team)
    mention: Mrkdwn
    if team is not None and team.usergroup:
        mention = mrkdwn.usergroup(team.usergroup)
    elif team is not None and team.members:
        mention = mrkdwn.join(" ", (mrkdwn.user(member) for member in team.members))
    else:
        mention = mrkdwn.escape(step.team)
    if widened:
        what = md("you may now also approve {} (or reject it)", ", ".join(widened))
    else:
        what = md("you are notified only: this step lets you fill none of its rules")
    text = md(
        ":rotating_light: Escalated (level {}): {}, {} needs an approval decision; {}. {}",
        step.level,
        mention,
        _subject(request),
        what,
        _card_link(request),
    )
    await _queue(
        uow,
        now,
        key=f"escalate:{request.id}:{step.level}:card",
        request=request,
        channel=request.channel,
        thread_ts=request.message_ts,
        text=text,
    )
    if team is not None and team.channel and team.channel != request.channel:
        await _queue(
            uow,
            now,
            key=f"escalate:{request.id}:{step.level}:team",
            request=request,
            channel=team.channel,
            text=text,
        )


async def _decide(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    step: Step,
    now: datetime,
) -> None:
    vetoes = [
        vote.voter
        for vote in votes
        if vote.kind is VoteKind.REJECT and is_eligible(request.rules, eligible, vote.voter)
    ]
    if step.kind is StepKind.AUTO_APPROVE and not vetoes:
        request.state = RequestState.APPROVED
        request.decision_reason = "auto-approved: nobody rejected it before the deadline"
        notice = md("was auto-approved: nobody rejected it before the deadline.")
    else:
        request.state = RequestState.EXPIRED
        if step.kind is StepKind.AUTO_APPROVE:
            # Only with reject: quorum can a rejection leave the request open; it still vetoes.
            request.decision_reason = f"expired: auto-approval vetoed by {', '.join(vetoes)}"
        else:
            request.decision_reason = "expired: no decision before the deadline"
        notice = md("expired without a decision ({}).", request.decision_reason)
    request.decided_at = now
    await record_decision(deps, uow, request, votes, None, now)
    requester = request.requester.slack_user
    if requester is not None:
        await _queue(
            uow,
            now,
            key=f"decided:{request.id}",
            request=request,
            channel=requester,
            dm=True,
            text=md("Your deployment {} {} {}", _subject(request), notice, _card_link(request)),
        )


async def _queue(
    uow: UnitOfWork,
    now: datetime,
    *,
    key: str,
    request: ApprovalRequest,
    channel: str,
    text: Mrkdwn,
    dm: bool = False,
    thread_ts: str | None = None,
) -> None:
    await uow.messages.add(
        OutgoingMessage(
            id=new_id("msg", now),
            dedupe_key=key,
            channel=channel,
            text=text,
            created_at=now,
            not_before=now,
            request_id=request.id,
            dm=dm,
            thread_ts=thread_ts,
        )
    )


# --- re-arm on start ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rearmed:
    open_requests: int
    changed: int  # timers the current policy moved (e.g. the SLA was edited while we were down)
    earliest: datetime | None


async def rearm(deps: Deps) -> Rearmed:
    """Recompute every open request's next timer from the current policy and its history, write
    the ones that moved, and return the earliest (the caller schedules a wake-up for it)."""
    now = deps.clock.now()
    async with deps.database.unit_of_work(read_only=True) as uow:
        open_requests = list(await uow.requests.list_open())
    moved: list[tuple[ApprovalRequest, datetime | None]] = []
    earliest: datetime | None = None
    for request in open_requests:
        step = _plan(deps.policy, request, now)
        due = step.due_at if step is not None else None
        stored = request.next_due_at
        # Overdue either way is the same to the sweep (it recomputes the step when it fires).
        overdue = due is not None and stored is not None and due <= now and stored <= now
        if due != stored and not overdue:
            moved.append((request, due))
        if due is not None and (earliest is None or due < earliest):
            earliest = due
    for start in range(0, len(moved), _REARM_CHUNK):
        await _write_rearmed(deps, moved[start : start + _REARM_CHUNK])
    return Rearmed(len(open_requests), len(moved), earliest)


async def _write_rearmed(
    deps: Deps, chunk: Sequence[tuple[ApprovalRequest, datetime | None]]
) -> None:
    try:
        async with deps.database.unit_of_work() as uow:
            for request, due in chunk:
                request.next_due_at = due
                await uow.requests.save(request)
            await uow.commit()
    except ConcurrencyError:
        # Something changed one of them meanwhile: the sweep that changed it recomputed its timer.
        for request, _due in chunk:
            try:
                async with deps.database.unit_of_work() as uow:
                    fresh = await uow.requests.get_for_update(request.id)
                    if fresh is None:
                        continue
                    step = _plan(deps.policy, fresh, deps.clock.now())
                    fresh.next_due_at = step.due_at if step is not None else None
                    await uow.requests.save(fresh)
                    await uow.commit()
            except ConcurrencyError:
                log.info("re-arm of %s lost a race; its own change re-armed it", request.id)
