"""request_status: what a polling pipeline (GET /api/v1/requests/{id}) sees: what is stored, and
the user groups' members as Slack last listed them (`known_request_team_members`); it never
calls Slack."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.model import ApprovalRequest, Delivery, Vote
from bot.domain.quorum import Tally, tally
from bot.services.deps import Deps
from bot.services.errors import NotFound
from bot.services.teams import known_request_team_members
from bot.services.timers import next_timer_at, timer_note


@dataclass(frozen=True, slots=True)
class RequestStatus:
    request: ApprovalRequest
    tally: Tally
    votes: tuple[Vote, ...]
    delivery: Delivery | None
    next_timer: str | None = None  # "escalates to sre in 42 min"
    next_timer_at: datetime | None = None


async def request_status(deps: Deps, request_id: str) -> RequestStatus:
    async with deps.database.unit_of_work(read_only=True) as uow:
        request = await uow.requests.get(request_id)
        if request is None:
            raise NotFound(f"no request {request_id!r}")
        votes = tuple(await uow.votes.list_for(request_id))
        deliveries = list(await uow.outbox.get_for_request(request_id))
    # Never asks Slack: a polling pipeline gets an answer while Slack is down.
    eligible = known_request_team_members(deps, request, votes)
    now = deps.clock.now()
    return RequestStatus(
        request=request,
        tally=tally(request.rules, eligible, votes, request.reject_mode),
        votes=votes,
        delivery=deliveries[-1] if deliveries else None,
        next_timer=timer_note(deps.policy, request, now),
        next_timer_at=next_timer_at(deps.policy, request, now),
    )


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is waiting: for operators' dashboards and alerts."""

    open_requests: int
    callbacks_pending: int
    slack_messages_pending: int


async def backlog(deps: Deps) -> Backlog:
    async with deps.database.unit_of_work(read_only=True) as uow:
        return Backlog(
            open_requests=await uow.requests.count_open(),
            callbacks_pending=await uow.outbox.count_pending(),
            slack_messages_pending=await uow.messages.count_pending(),
        )
