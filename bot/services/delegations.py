"""Delegation: while I am away, someone may vote in my place (`/approvals delegate`).

The rules (no chaining, a person counts once per request, a delegate never votes on their own
request) live in bot/domain/eligibility.py; this records, lists and revokes delegations, each
with its audit event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.domain import events
from bot.domain.errors import DomainError
from bot.domain.model import Delegation
from bot.domain.when import TimeSpec, describe, resolve
from bot.services.deps import Deps
from bot.services.freezes import user_zone
from bot.services.ids import new_id
from bot.services.jobs import Job


@dataclass(frozen=True, slots=True)
class MyDelegations:
    given: tuple[Delegation, ...]  # mine to others, active or upcoming
    received: tuple[Delegation, ...]  # others' to me, active now


async def delegate(
    deps: Deps,
    *,
    actor: str,
    to: str,
    until: TimeSpec,
    environments: Sequence[str],
    changed: Callable[[], None] = lambda: None,
) -> Delegation:
    """Let `to` vote for `actor` until the given time; `changed` drops cached delegations."""
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
    return delegation


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
            whom = f" to <@{to}>" if to else ""
            raise DomainError(f"You have no active delegation{whom}.")
        for delegation in mine:
            await uow.delegations.revoke(delegation.id, now)
            await uow.events.append(events.delegation_revoked(delegation, now, actor))
        await uow.commit()
    changed()
    return tuple(mine)
