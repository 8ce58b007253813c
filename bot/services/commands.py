"""`/approvals pending`: the requests waiting on me, and (for release managers) open reviews."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.eligibility import check_vote
from bot.domain.model import ApprovalRequest, VoteKind
from bot.services.breakglass import reviews_open
from bot.services.deps import Deps
from bot.services.freezes import is_release_manager, state_of, windows_at
from bot.services.teams import request_team_members

MAX_LISTED = 25


@dataclass(frozen=True, slots=True)
class Waiting:
    request: ApprovalRequest
    frozen: bool  # my approval would count, but only once the freeze ends


@dataclass(frozen=True, slots=True)
class Pending:
    waiting: tuple[Waiting, ...]
    reviews: tuple[ApprovalRequest, ...]  # break-glass reviews not recorded (release managers)
    release_manager: bool


async def pending_for(deps: Deps, user: str) -> Pending:
    """Open requests on which an approval by `user` (as themselves) would be recorded and help:
    eligible through a team or user group, not the requester, not yet voted, still needed."""
    now = deps.clock.now()
    async with deps.database.unit_of_work(read_only=True) as uow:
        requests = list(await uow.requests.list_open())
        windows = await windows_at(uow, deps.policy, now)
        votes = {r.id: list(await uow.votes.list_for(r.id)) for r in requests}
    waiting: list[Waiting] = []
    for request in requests:
        frozen = state_of(request, windows, now).frozen
        refusal = check_vote(
            request,
            votes[request.id],
            await request_team_members(deps, request),  # escalated teams count too
            voter=user,
            kind=VoteKind.APPROVE,
            now=now,
        )
        if refusal is None:
            waiting.append(Waiting(request=request, frozen=frozen))
    manager = await is_release_manager(deps, user)
    reviews = tuple(await reviews_open(deps)) if manager else ()
    return Pending(waiting=tuple(waiting[:MAX_LISTED]), reviews=reviews, release_manager=manager)
