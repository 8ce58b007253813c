"""record_decision: a decided request's audit event and pipeline callback, in its transaction.

Every way a request ends (votes, expiry, auto-approval, break-glass) goes through here, so the
callback is queued in the outbox in the same commit as the decision, never after it. A request
that named no callback (a generic webhook without `callback_url`: its pipeline polls) gets none,
and the trail says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.domain import events
from bot.domain.model import ApprovalRequest, Delivery, Vote
from bot.domain.quorum import Tally
from bot.ports import UnitOfWork
from bot.services.deps import Deps
from bot.services.ids import new_id


async def record_decision(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    votes: Sequence[Vote],
    outcome: Tally | None,
    now: datetime,
) -> None:
    """The decision's audit event and its callback, in the decision's transaction."""
    await uow.events.append(events.request_decided(request, outcome, now))
    if not request.callback:
        await uow.events.append(events.callback_not_requested(request, now))
        return
    # A generic request naming a Jenkins input step is answered by the Jenkins notifier
    # (docs/pipelines/jenkins.md); when none is configured the delivery fails visibly on the card.
    target = "jenkins" if "jenkins" in request.callback else request.source
    notifier = deps.notifiers.get(target)
    delivery = Delivery(
        id=new_id("dlv", now),
        request_id=request.id,
        target=target,
        payload=notifier.delivery_payload(request, votes) if notifier is not None else {},
        created_at=now,
        next_attempt_at=now,
    )
    await uow.outbox.add(delivery)
    await uow.events.append(events.callback_queued(delivery))
