"""Delegation: while I am away, someone may vote in my place (`/approvals delegate`).

The rules (no chaining, a person counts once per request, a delegate never votes on their own
request) live in bot/domain/eligibility.py, and what the policy's `delegation:` section allows in
bot/domain/delegation_rules.py; this checks a new delegation against both and against Slack
(who the two people are), records, lists and revokes delegations, each with its audit event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.domain import events, mrkdwn
from bot.domain.delegation_rules import (
    DelegationTerms,
    TeamMembers,
    delegation_refusal,
    not_honoured,
    terms_refusal,
)
from bot.domain.errors import DomainError
from bot.domain.model import Delegation
from bot.domain.mrkdwn import md
from bot.domain.people import person_refusal
from bot.domain.text import control_character_refusal
from bot.domain.when import TimeSpec, describe, resolve
from bot.policy import Policy
from bot.services.deps import Deps
from bot.services.freezes import user_zone
from bot.services.ids import new_id
from bot.services.jobs import Job
from bot.services.teams import team_members

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MyDelegations:
    given: tuple[Delegation, ...]  # mine to others, active or upcoming
    received: tuple[Delegation, ...]  # others' to me, active now


@dataclass(frozen=True, slots=True)
class Delegated:
    delegation: Delegation
    not_honoured_in: tuple[str, ...]  # environments where the policy says it will not count


# The vote path's terms per policy, built once: every click asks.
_TERMS: dict[int, tuple[Policy, DelegationTerms]] = {}


def delegation_terms(policy: Policy) -> DelegationTerms:
    """The policy's delegation rules with every team's static members. A team with a Slack user
    group is partial here: the vote path does not ask Slack about teams beyond the request's
    own (it fills those in from what it asked), so membership of other user groups was checked
    at `/approvals delegate` and is not checked again on a vote."""
    cached = _TERMS.get(id(policy))
    if cached is None or cached[0] is not policy:
        teams = TeamMembers(
            known={name: frozenset(team.members) for name, team in policy.teams.items()},
            partial=frozenset(name for name, team in policy.teams.items() if team.usergroup),
        )
        cached = (policy, DelegationTerms(policy.delegation.rules, teams))
        _TERMS.clear()  # one policy is in force at a time
        _TERMS[id(policy)] = cached
    return cached[1]


async def delegate(
    deps: Deps,
    *,
    actor: str,
    to: str,
    until: TimeSpec,
    environments: Sequence[str],
    changed: Callable[[], None] = lambda: None,
) -> Delegated:
    """Let `to` vote for `actor` until the given time, if the policy allows it and Slack vouches
    for both people; `changed` drops cached delegations. Refusals change nothing."""
    for what, text in (("The delegate", to), *(("The environment", env) for env in environments)):
        if (refused := control_character_refusal(what, text)) is not None:
            raise DomainError(refused)
    if to == actor:
        raise DomainError("You cannot delegate to yourself.")
    for env in environments:
        if env not in deps.policy.environments:
            raise DomainError(f"Unknown environment {env!r}.")
    now = deps.clock.now()
    zone = await user_zone(deps, actor)
    ends_at = resolve(until, now, zone)
    if ends_at <= now:
        raise DomainError(
            f"That end time ({describe(ends_at, zone, now)}) has already passed; "
            "try 'until tomorrow 18:00' or 'for 3d'."
        )
    rules = deps.policy.delegation.rules
    period = ends_at - now
    # What the policy refuses anyway is said before (and without) asking Slack.
    refusal = terms_refusal(
        delegator=actor, delegate=to, period=period, environments=environments, rules=rules
    ) or await _people_refusal(deps, actor, to)
    if refusal is None:
        teams = await _teams(deps, (rules.to,) if rules.to else tuple(deps.policy.teams))
        refusal = delegation_refusal(
            delegator=actor,
            delegate=to,
            period=period,
            environments=environments,
            rules=rules,
            teams=teams,
        )
    if refusal is not None:
        raise DomainError(refusal)
    delegation = Delegation(
        id=new_id("dlg", now),
        delegator=actor,
        delegate=to,
        environments=tuple(environments),
        starts_at=now,
        ends_at=ends_at,
        created_at=now,
    )
    async with deps.database.unit_of_work() as uow:
        await uow.delegations.add(delegation)
        await uow.events.append(events.delegation_created(delegation))
        await uow.commit()
    changed()
    deps.wake(Job.ANNOUNCE)
    return Delegated(delegation, not_honoured(delegation.environments, rules))


async def _people_refusal(deps: Deps, actor: str, to: str) -> str | None:
    """Why Slack does not vouch for the delegator or the delegate (None: it does). Fails closed:
    when Slack cannot be asked, the delegation is refused."""
    directory = deps.directory
    installation = await _ask(directory.installation(), "this workspace")
    me = await _ask(directory.user(actor, fresh=True), "you")
    why = person_refusal(actor, me, installation)
    if why is not None:
        return why
    them = await _ask(directory.user(to, fresh=True), mrkdwn.user(to))
    return person_refusal(to, them, installation)


async def _teams(deps: Deps, names: Sequence[str]) -> TeamMembers:
    members: Mapping[str, frozenset[str]] = await _ask(
        team_members(deps, names), "the members of the teams delegations may go to"
    )
    return TeamMembers(known=dict(members))


async def _ask(call: Awaitable[T], what: str) -> T:
    try:
        return await call
    except Exception:
        log.warning("could not check %s with Slack for a delegation", what, exc_info=True)
        raise DomainError(
            md("Quorum could not check {} with Slack; try again in a minute.", what)
        ) from None


async def my_delegations(deps: Deps, *, actor: str) -> MyDelegations:
    now = deps.clock.now()
    async with deps.database.unit_of_work(read_only=True) as uow:
        given = tuple(await uow.delegations.list_by_delegator(actor, now))
        received = tuple(d for d in await uow.delegations.list_active(now) if d.delegate == actor)
    return MyDelegations(given=given, received=received)


async def undelegate(
    deps: Deps,
    *,
    actor: str,
    to: str | None = None,
    changed: Callable[[], None] = lambda: None,
) -> tuple[Delegation, ...]:
    """Revoke the actor's delegations (only the one to `to`, when given); returns them."""
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        mine = [
            d
            for d in await uow.delegations.list_by_delegator(actor, now)
            if to is None or d.delegate == to
        ]
        if not mine:
            whom = md(" to {}", mrkdwn.user(to)) if to else ""
            raise DomainError(md("You have no active delegation{}.", whom))
        for delegation in mine:
            await uow.delegations.revoke(delegation.id, now)
            await uow.events.append(events.delegation_revoked(delegation, now, actor))
        await uow.commit()
    changed()
    return tuple(mine)
