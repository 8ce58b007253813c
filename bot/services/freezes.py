"""Deployment freezes: start and end ad-hoc ones (/freeze, /unfreeze), list them with the policy's
calendar windows, and keep open requests in step (card note, `frozen_until`, SLA clock start).

Whether a request is frozen is always computed from the freezes table and the policy at the time
asked (votes, cards); `requests.frozen_until` only records what the last sweep saw, so that a
change bumps the request's revision (its card re-renders) and the SLA clock starts when the
freeze ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain import events, mrkdwn
from bot.domain.errors import DomainError
from bot.domain.freezes import (
    UNTIL_FURTHER_NOTICE,
    CronError,
    FreezeState,
    FreezeWindow,
    RecurringWindow,
    freeze_state,
    recurring_windows,
    upcoming,
    window_of,
)
from bot.domain.model import ApprovalRequest, Freeze, OutgoingMessage
from bot.domain.mrkdwn import Mrkdwn, md
from bot.domain.text import control_character_refusal, is_blank
from bot.domain.when import TimeSpec, describe, resolve
from bot.policy import Policy
from bot.ports import UnitOfWork
from bot.services.deps import Deps
from bot.services.ids import new_id
from bot.services.jobs import Job
from bot.services.teams import team_members

log = logging.getLogger(__name__)

# Windows that start within this horizon chain into a running freeze's "until".
_CHAIN_HORIZON = timedelta(days=8)
# How far ahead /freeze list looks for the next occurrence of each calendar window.
_LIST_HORIZON = timedelta(days=400)
FREEZE_JOB = Job.FREEZES


class NotReleaseManager(DomainError):
    def __init__(self, what: str, team: str | None) -> None:
        who = f"members of {team} (the release managers)" if team else "release managers"
        super().__init__(f"Only {who} may {what}.")


@dataclass(frozen=True, slots=True)
class Started:
    freeze: Freeze
    channels: tuple[str, ...]  # where it was announced


@dataclass(frozen=True, slots=True)
class Ended:
    freezes: tuple[Freeze, ...]
    still_frozen_by: tuple[FreezeWindow, ...]  # calendar windows that still cover the target


# --- reading --------------------------------------------------------------------------------------


def recurring_of(policy: Policy) -> tuple[RecurringWindow, ...]:
    return tuple(
        RecurringWindow(
            name=f.name,
            environments=tuple(f.environments),
            services=tuple(f.services),
            cron=f.cron,
            zone=f.zone or policy.timezone,
            duration=f.duration,
            reason=f.reason,
        )
        for f in policy.freezes
    )


def _calendar(policy: Policy, start: datetime, end: datetime) -> list[FreezeWindow]:
    found: list[FreezeWindow] = []
    for window in recurring_of(policy):
        try:
            found.extend(recurring_windows([window], start, end))
        except CronError:
            # Not reached for a loaded policy (the loader validates with this same parser);
            # a policy built otherwise is said to be wrong loudly rather than guessed at.
            log.exception("calendar freeze %r cannot be evaluated; it is ignored", window.name)
    return found


async def windows_at(uow: UnitOfWork, policy: Policy, now: datetime) -> list[FreezeWindow]:
    """Every window that is active at `now` or starts soon enough to extend a running freeze."""
    return windows_from(await uow.freezes.list_current(now), policy, now)


def windows_from(freezes: Iterable[Freeze], policy: Policy, now: datetime) -> list[FreezeWindow]:
    """`windows_at` from freezes read earlier (`FreezeRepository.list_current` at or before
    `now`, with nothing written since): those over by `now` are left out."""
    adhoc = [
        window_of(f)
        for f in freezes
        if (f.ended_at is None or f.ended_at > now) and (f.ends_at is None or f.ends_at > now)
    ]
    return adhoc + _calendar(policy, now, now + _CHAIN_HORIZON)


def state_of(
    request: ApprovalRequest, windows: Sequence[FreezeWindow], now: datetime
) -> FreezeState:
    """The freeze that holds `request` at `now`; break glass overrides every freeze."""
    if request.break_glass:
        return FreezeState(windows=(), until=None)
    return freeze_state(windows, request.environment, request.service, now)


def policy_zone(policy: Policy) -> ZoneInfo:
    return ZoneInfo(policy.timezone)


async def user_zone(deps: Deps, user: str) -> ZoneInfo:
    """The person's Slack time zone (users.info), else the policy's."""
    try:
        name = await deps.directory.user_timezone(user)
    except Exception:  # Slack unreachable: fall back rather than refuse the command
        log.exception("users.info failed; using the policy time zone")
        name = None
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("unknown time zone %r from Slack; using the policy time zone", name)
    return policy_zone(deps.policy)


def until_text(state: FreezeState, zone: ZoneInfo, now: datetime) -> str:
    if state.until is None or state.until >= UNTIL_FURTHER_NOTICE:
        return "until further notice"
    return f"until {describe(state.until, zone, now)}"


def _by(window: FreezeWindow) -> Mrkdwn:
    if window.created_by:
        return md("by {}", mrkdwn.user(window.created_by))
    return md("by the {} calendar freeze", window.recurring)


def frozen_note(state: FreezeState, zone: ZoneInfo, now: datetime) -> Mrkdwn | None:
    """`Frozen until Mon 09:00 GMT by <@U…>: quarter-end close` (the card line)."""
    primary = state.primary
    if primary is None:
        return None
    more = len(state.windows) - 1
    also = f" (and {more} more freeze{'s' if more > 1 else ''})" if more else ""
    return md(
        "Frozen {} {}: {}{}", until_text(state, zone, now), _by(primary), primary.reason, also
    )


def frozen_reason(state: FreezeState, zone: ZoneInfo, now: datetime) -> Mrkdwn | None:
    """The clause the vote refusal quotes (eligibility.check_vote's `frozen_reason`)."""
    primary = state.primary
    if primary is None:
        return None
    return md("{} (frozen {} {})", primary.reason, _by(primary), until_text(state, zone, now))


def frozen_reason_in(
    policy: Policy, request: ApprovalRequest, windows: Sequence[FreezeWindow], now: datetime
) -> Mrkdwn | None:
    """For the vote writer: why an approval of `request` is paused now (None: it is not), given
    the freeze windows it read once for its batch (`windows_at`)."""
    if request.break_glass or not request.state.is_open:
        return None
    return frozen_reason(state_of(request, windows, now), policy_zone(policy), now)


async def card_note(
    deps: Deps, request: ApprovalRequest, windows: Sequence[FreezeWindow] | None = None
) -> Mrkdwn | None:
    """The card's freeze line for `request` now (None when it is not frozen or decided).
    `windows` (from `windows_at`) saves the query when the caller renders many cards."""
    if not request.state.is_open or request.break_glass:
        return None
    now = deps.clock.now()
    if windows is None:
        async with deps.database.unit_of_work(read_only=True) as uow:
            windows = await windows_at(uow, deps.policy, now)
    state = state_of(request, windows, now)
    if (state.until if state.frozen else None) != request.frozen_until:
        deps.wake(FREEZE_JOB)  # e.g. opened during a freeze: record it (and stop its SLA clock)
    return frozen_note(state, policy_zone(deps.policy), now)


async def list_freezes(deps: Deps, now: datetime) -> list[FreezeWindow]:
    """Active and upcoming ad-hoc freezes, and the current or next occurrence of each calendar
    window, by start."""
    async with deps.database.unit_of_work(read_only=True) as uow:
        adhoc = [window_of(f) for f in await uow.freezes.list_current(now)]
    calendar: list[FreezeWindow] = []
    for window in recurring_of(deps.policy):
        try:
            found = recurring_windows([window], now, now + _LIST_HORIZON)
        except CronError:
            log.exception("calendar freeze %r cannot be evaluated", window.name)
            continue
        calendar.extend(found[:1])
    return upcoming(adhoc + calendar, now)


# --- release managers -----------------------------------------------------------------------------


async def is_release_manager(deps: Deps, user: str) -> bool:
    team = deps.policy.release_managers
    if team is None:
        return False
    members = await team_members(deps, [team])
    return user in members.get(team, frozenset())


async def require_release_manager(deps: Deps, user: str, what: str) -> None:
    if not await is_release_manager(deps, user):
        raise NotReleaseManager(what, deps.policy.release_managers)


# --- changing freezes -----------------------------------------------------------------------------


async def start_freeze(
    deps: Deps,
    *,
    actor: str,
    environments: Sequence[str],
    services: Sequence[str],
    until: TimeSpec | None,
    reason: str,
) -> Started:
    """Record a freeze starting now, announce it in each affected channel (durable message
    queue, same transaction), then bring open requests in scope in step."""
    await require_release_manager(deps, actor, "freeze deployments")
    if (refused := control_character_refusal("The reason", reason)) is not None:
        raise DomainError(refused)
    if is_blank(reason):  # zero-width characters alone are no reason
        raise DomainError("A freeze needs a reason (it is shown on every card).")
    reason = reason.strip()
    _check_names(deps.policy, environments, services)
    now = deps.clock.now()
    ends_at: datetime | None = None
    if until is not None:
        ends_at = resolve(until, now, await user_zone(deps, actor))
        if ends_at <= now:
            zone = await user_zone(deps, actor)
            raise DomainError(
                f"That end time ({describe(ends_at, zone, now)}) has already passed; "
                "try 'for 2h' or a later 'until'."
            )
    freeze = Freeze(
        id=new_id("frz", now),
        environments=tuple(environments),
        services=tuple(services),
        starts_at=now,
        ends_at=ends_at,
        reason=reason,
        created_by=actor,
        created_at=now,
    )
    channels = affected_channels(deps.policy, freeze.environments, freeze.services)
    zone = policy_zone(deps.policy)
    text = md(
        ":snowflake: *Deployment freeze* {} {}, started by {}: {} ({}). Approvals are paused; "
        "release managers can break glass.",
        scope_text(freeze.environments, freeze.services),
        _window_until(window_of(freeze), zone, now),
        mrkdwn.user(actor),
        reason,
        mrkdwn.code(freeze.id),
    )
    async with deps.database.unit_of_work() as uow:
        await uow.freezes.add(freeze)
        await uow.events.append(events.freeze_started(freeze))
        await _announce(uow, channels, text, f"freeze:{freeze.id}:started", now)
        await uow.commit()
    deps.wake(Job.MESSAGES)
    await sync_frozen_requests(deps)
    return Started(freeze=freeze, channels=channels)


async def end_freezes(deps: Deps, *, actor: str, target: str) -> Ended:
    """End a freeze by id, every ad-hoc freeze covering an environment, or `all` of them."""
    await require_release_manager(deps, actor, "end a freeze")
    # Record who is frozen before ending anything, so that everyone released below is seen as a
    # change (a request opened moments ago may not have been swept yet).
    await sync_frozen_requests(deps)
    now = deps.clock.now()
    wanted = target.strip()
    env = next((e for e in deps.policy.environments if e.lower() == wanted.lower()), None)
    async with deps.database.unit_of_work() as uow:
        current = [f for f in await uow.freezes.list_current(now) if f.starts_at <= now]
        if wanted.lower() == "all":
            chosen = current
        elif env is not None:
            chosen = [f for f in current if not f.environments or env in f.environments]
        else:
            chosen = [f for f in current if f.id == wanted]
            if not chosen:
                known = ", ".join(f"`{f.id}`" for f in current) or "none"
                envs = ", ".join(sorted(deps.policy.environments))
                raise DomainError(
                    f"No active freeze or environment {wanted!r} (active freezes: {known}; "
                    f"environments: {envs})."
                )
        calendar = [
            w
            for w in _calendar(deps.policy, now, now + timedelta(seconds=1))
            if w.active_at(now) and (env is None or not w.environments or env in w.environments)
        ]
        if not chosen:
            await uow.rollback()
            return Ended(freezes=(), still_frozen_by=tuple(calendar))
        zone = policy_zone(deps.policy)
        for freeze in chosen:
            await uow.freezes.end(freeze.id, now, actor)
            await uow.events.append(events.freeze_ended(freeze, now, actor))
            channels = affected_channels(deps.policy, freeze.environments, freeze.services)
            text = md(
                ":sunny: *Freeze ended* {} by {} at {} ({}: {}). Approvals are open again.",
                scope_text(freeze.environments, freeze.services),
                mrkdwn.user(actor),
                describe(now, zone, now),
                mrkdwn.code(freeze.id),
                freeze.reason,
            )
            await _announce(uow, channels, text, f"freeze:{freeze.id}:ended", now)
        await uow.commit()
    deps.wake(Job.MESSAGES)
    await sync_frozen_requests(deps)
    return Ended(freezes=tuple(chosen), still_frozen_by=tuple(calendar))


def _check_names(policy: Policy, environments: Iterable[str], services: Iterable[str]) -> None:
    for env in environments:
        if env not in policy.environments:
            raise DomainError(f"Unknown environment {env!r}.")
    for service in services:
        if service not in policy.services:
            raise DomainError(f"Unknown service {service!r}.")


def scope_text(environments: Sequence[str], services: Sequence[str]) -> Mrkdwn:
    envs = ", ".join(environments) if environments else "all environments"
    if services:
        return md("of {} in {}", ", ".join(services), envs)
    return md("in {}", envs)


def _window_until(window: FreezeWindow, zone: ZoneInfo, now: datetime) -> str:
    if window.ends_at is None:
        return "until further notice"
    return f"until {describe(window.ends_at, zone, now)}"


def affected_channels(
    policy: Policy, environments: Sequence[str], services: Sequence[str]
) -> tuple[str, ...]:
    """The channels of the teams owning the services in scope (all services when unscoped),
    plus the default channel when every service is in scope (unowned services post there)."""
    del environments  # every environment's cards of a service go to its owner's channel
    names = services or tuple(policy.services)
    channels: list[str] = []
    for name in names:
        service = policy.services.get(name)
        team = policy.team(service.owner) if service is not None else None
        channel = team.channel if team is not None and team.channel else policy.defaults.channel
        channels.append(channel)
    if not services:
        channels.append(policy.defaults.channel)
    return tuple(dict.fromkeys(channels))


async def _announce(
    uow: UnitOfWork, channels: Iterable[str], text: Mrkdwn, key: str, now: datetime
) -> None:
    for channel in channels:
        await uow.messages.add(
            OutgoingMessage(
                id=new_id("msg", now),
                dedupe_key=f"{key}:{channel}",
                channel=channel,
                text=text,
                created_at=now,
                not_before=now,
            )
        )


# --- keeping requests in step ---------------------------------------------------------------------


async def sync_frozen_requests(deps: Deps) -> int:
    """Record on each open request whether it is frozen and until when; returns how many changed.

    A request that becomes frozen stops its SLA clock (`sla_started_at = None`); one that is
    released starts it at the freeze's end and is made due at once (`next_due_at`) so the SLA
    sweep computes its timers. Every change bumps the revision, so the card re-renders.
    """
    now = deps.clock.now()
    async with deps.database.unit_of_work(read_only=True) as uow:
        windows = await windows_at(uow, deps.policy, now)
        open_requests = list(await uow.requests.list_open())
    changed = 0
    for request in open_requests:
        if _desired(request, windows, now) == request.frozen_until:
            continue
        async with deps.database.unit_of_work() as uow:
            fresh = await uow.requests.get_for_update(request.id)
            if fresh is None or not fresh.state.is_open:
                continue
            desired = _desired(fresh, windows, now)
            if desired == fresh.frozen_until:
                continue
            if desired is None:
                previous = fresh.frozen_until
                started = previous if previous is not None and previous <= now else now
                fresh.sla_started_at = started
                fresh.next_due_at = started
            else:
                fresh.sla_started_at = None
            fresh.frozen_until = desired
            await uow.requests.save(fresh)
            await uow.commit()
        changed += 1
    if changed:
        deps.wake(Job.ANNOUNCE)
        deps.wake(Job.ANNOUNCE)
    return changed


def _desired(
    request: ApprovalRequest, windows: Sequence[FreezeWindow], now: datetime
) -> datetime | None:
    state = state_of(request, windows, now)
    return state.until if state.frozen else None
