"""The SLA ladder: reminders, escalation levels, expiry or auto-approval, on business-hours time.

Pure: deadlines are computed from the spec, when the SLA clock started and what already fired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from bot.domain.model import Rule

# Reminders repeat every `remind_after` of SLA time, but never more than this many times per
# request and never at or after expiry: an approver reminded three times has been told.
MAX_REMINDERS = 3
# A business-hours search gives up after this many calendar days (a spec whose windows never
# come would otherwise loop forever; the policy forbids empty windows, this is a backstop).
_MAX_DAYS = 3 * 366


class ExpireAction(StrEnum):
    REJECT = "reject"
    APPROVE = "approve"  # only for low-risk requests: the caller downgrades otherwise


class StepKind(StrEnum):
    REMIND = "remind"
    ESCALATE = "escalate"
    EXPIRE = "expire"
    AUTO_APPROVE = "auto_approve"


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """SLA clocks run only on `days` (0 = Monday) between `start` and `end` local time."""

    days: frozenset[int]
    start: time
    end: time
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if not self.days or not self.start < self.end:
            raise ValueError("business hours need at least one day and start before end")


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """One rung of the ladder: after `after` of SLA time `team` is notified, and may from then on
    also fill the rules the step widens (`widens`)."""

    after: timedelta
    team: str
    # The rules named in the policy's `for_rules`, whatever added them (a risk tier, break-glass);
    # None when the step names none: then the environment's own `from: owner` rules, listed in
    # `owner_rules`, and never a specialist sign-off added by a risk tier or break-glass.
    for_rules: tuple[str, ...] | None = None
    owner_rules: tuple[str, ...] = ()

    def widens(self, rule: Rule) -> bool:
        """Whether members of `team` may also fill `rule` once this step has fired."""
        if self.for_rules is not None:
            return rule.name in self.for_rules
        return rule.origin == "environment" and rule.name in self.owner_rules


def widened_names(rules: Sequence[Rule], step: EscalationStep) -> tuple[str, ...]:
    """Names of the rules of `rules` that `step` lets its team fill in addition to their own
    team (a rule of the step's own team gains nothing), in rule order."""
    return tuple(rule.name for rule in rules if step.widens(rule) and step.team != rule.team)


def widen(rules: Sequence[Rule], step: EscalationStep) -> tuple[Rule, ...]:
    """`rules` once `step` has fired: each rule it widens gets the step's team in `widened_by`
    (its own team, or a team already there, is not added twice). The others are unchanged."""
    return tuple(
        replace(rule, widened_by=(*rule.widened_by, step.team))
        if step.widens(rule) and step.team != rule.team and step.team not in rule.widened_by
        else rule
        for rule in rules
    )


def widen_reached(
    rules: Sequence[Rule], steps: Sequence[EscalationStep], level: int
) -> tuple[Rule, ...]:
    """`rules` widened by every step up to escalation `level` (for rules added to a request
    after some steps fired, e.g. by break-glass)."""
    widened = tuple(rules)
    for step in steps[: max(level, 0)]:
        widened = widen(widened, step)
    return widened


@dataclass(frozen=True, slots=True)
class SlaSpec:
    remind_after: timedelta | None = None
    escalate: tuple[EscalationStep, ...] = ()
    expire_after: timedelta | None = None
    on_expire: ExpireAction = ExpireAction.REJECT
    business_hours: BusinessHours | None = None
    max_reminders: int = MAX_REMINDERS


@dataclass(frozen=True, slots=True)
class Step:
    """The next thing the ladder does, and when. `level`/`team` for ESCALATE; `reminder` is the
    reminder count after this step for REMIND (overdue reminders collapse into one)."""

    kind: StepKind
    due_at: datetime
    level: int = 0
    team: str | None = None
    reminder: int = 0


# --- business time -----------------------------------------------------------------------------


def _window(day: date, hours: BusinessHours) -> tuple[datetime, datetime]:
    """The day's window in UTC. Converted before any arithmetic: subtracting two aware datetimes
    that share a ZoneInfo compares wall clocks and would be an hour off across a DST change."""
    zone = ZoneInfo(hours.zone)
    start = datetime.combine(day, hours.start, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day, hours.end, tzinfo=zone).astimezone(UTC)
    return start, end


def add_business_time(start: datetime, delta: timedelta, hours: BusinessHours | None) -> datetime:
    """The instant `delta` of SLA time after `start`: wall-clock time without business hours,
    else only time inside the windows counts (a window's end is a valid deadline)."""
    if hours is None:
        return start + delta
    remaining = delta
    day = start.astimezone(ZoneInfo(hours.zone)).date()
    for offset in range(_MAX_DAYS):
        current = day + timedelta(days=offset)
        if current.weekday() not in hours.days:
            continue
        window_start, window_end = _window(current, hours)
        begin = max(window_start, start)
        if begin >= window_end:
            continue
        if remaining <= window_end - begin:
            return begin + remaining
        remaining -= window_end - begin
    raise ValueError("no business hours within the search horizon")


def business_time_between(a: datetime, b: datetime, hours: BusinessHours | None) -> timedelta:
    """How much SLA time passes from `a` to `b` (zero when `b` is not after `a`)."""
    if b <= a:
        return timedelta(0)
    if hours is None:
        return b - a
    total = timedelta(0)
    day = a.astimezone(ZoneInfo(hours.zone)).date()
    last = b.astimezone(ZoneInfo(hours.zone)).date()
    current = day
    while current <= last:
        if current.weekday() in hours.days:
            window_start, window_end = _window(current, hours)
            begin, end = max(window_start, a), min(window_end, b)
            if begin < end:
                total += end - begin
        current += timedelta(days=1)
    return total


# --- the ladder --------------------------------------------------------------------------------


def _reminder_due(spec: SlaSpec, started: datetime, number: int) -> datetime | None:
    """When reminder `number` (1-based) is due, or None when it is beyond the cap or expiry."""
    if spec.remind_after is None or spec.remind_after <= timedelta(0):
        return None
    if number > spec.max_reminders:
        return None
    offset = spec.remind_after * number
    if spec.expire_after is not None and offset >= spec.expire_after:
        return None
    return add_business_time(started, offset, spec.business_hours)


def next_step(
    spec: SlaSpec | None,
    sla_started_at: datetime | None,
    reminders_sent: int,
    escalation_level: int,
    now: datetime,
) -> Step | None:
    """The step to take now (`due_at <= now`) or the next one to wait for; None when the ladder
    is done (or there is no SLA, or its clock has not started).

    When several steps are overdue (after an outage): expiry wins outright; otherwise escalations
    go first, one level at a time, each announced once; overdue reminders collapse into one.
    """
    if spec is None or sla_started_at is None:
        return None
    hours = spec.business_hours
    candidates: list[tuple[int, Step]] = []  # (priority on equal due times, step)
    if spec.expire_after is not None:
        kind = StepKind.AUTO_APPROVE if spec.on_expire is ExpireAction.APPROVE else StepKind.EXPIRE
        due = add_business_time(sla_started_at, spec.expire_after, hours)
        if due <= now:
            return Step(kind, due)
        candidates.append((0, Step(kind, due)))
    if escalation_level < len(spec.escalate):
        rung = spec.escalate[escalation_level]
        due = add_business_time(sla_started_at, rung.after, hours)
        step = Step(StepKind.ESCALATE, due, level=escalation_level + 1, team=rung.team)
        if due <= now:
            return step
        candidates.append((1, step))
    number = reminders_sent + 1
    due_reminder = _reminder_due(spec, sla_started_at, number)
    if due_reminder is not None:
        # Catch up: the latest reminder already due stands for all the missed ones.
        while due_reminder <= now:
            following = _reminder_due(spec, sla_started_at, number + 1)
            if following is None or following > now:
                break
            number, due_reminder = number + 1, following
        candidates.append((2, Step(StepKind.REMIND, due_reminder, reminder=number)))
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[1].due_at, c[0]))[1]


def next_notable_step(
    spec: SlaSpec | None,
    sla_started_at: datetime | None,
    reminders_sent: int,
    escalation_level: int,
    now: datetime,
) -> Step | None:
    """Like `next_step` but skipping reminders: what the card and the API announce."""
    if spec is None:
        return None
    return next_step(spec, sla_started_at, spec.max_reminders, escalation_level, now)


def _until(delta: timedelta) -> str:
    minutes = max(1, -(-int(delta.total_seconds()) // 60))  # round up: never "in 0 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _at(when: datetime, now: datetime, zone: str) -> str:
    tz = ZoneInfo(zone)
    local, today = when.astimezone(tz), now.astimezone(tz)
    label = local.tzname() or zone
    if local.date() == today.date():
        return f"{local:%H:%M} {label}"
    return f"{local:%a %d %b %H:%M} {label}"


def next_timer_text(
    spec: SlaSpec | None,
    sla_started_at: datetime | None,
    reminders_sent: int,
    escalation_level: int,
    now: datetime,
    *,
    relative: bool = True,
    rules: Sequence[Rule] | None = None,
) -> str | None:
    """The next timer in words: "escalates to sre in 42 min", "expires at 14:30 UTC",
    "auto-approves at 14:30 UTC unless someone rejects" (a pending auto-approval is always
    announced: it is the veto window). `relative=False` says "escalates to sre at 15:12 UTC",
    for a card that is not re-rendered every minute. Given the request's `rules`, an escalation
    also says what the team may then approve: "escalates to sre in 42 min, who may then also
    approve owner-review" (or "(notified only)")."""
    step = next_notable_step(spec, sla_started_at, reminders_sent, escalation_level, now)
    if spec is None or step is None:
        return None
    zone = spec.business_hours.zone if spec.business_hours else "UTC"
    parts: list[str] = []
    if step.kind is StepKind.ESCALATE:
        when = (
            f"in {_until(step.due_at - now)}" if relative else f"at {_at(step.due_at, now, zone)}"
        )
        text = f"escalates to {step.team} {when}"
        if rules is not None:
            names = widened_names(rules, spec.escalate[step.level - 1])
            text += (
                f", who may then also approve {', '.join(names)}" if names else " (notified only)"
            )
        parts.append(text)
    elif step.kind is StepKind.EXPIRE:
        parts.append(f"expires at {_at(step.due_at, now, zone)}")
    if spec.on_expire is ExpireAction.APPROVE and spec.expire_after is not None:
        assert sla_started_at is not None  # next_step returned a step
        due = add_business_time(sla_started_at, spec.expire_after, spec.business_hours)
        parts.append(f"auto-approves at {_at(due, now, zone)} unless someone rejects")
    return " · ".join(parts) or None
