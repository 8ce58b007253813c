"""apply_update: a provider-side change to a deployment Quorum gates (GitLab: approved or canceled
in GitLab itself) is recorded on its request, closing the request when the provider stopped
waiting for Quorum's decision.

Such a request ends CANCELLED with the provider's reason and without a callback: the provider
already moved on, so there is nobody left to tell, and approving or rejecting it in Quorum's
name would put a decision in the audit trail that nobody in Slack took.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from bot.domain import events
from bot.domain.model import ApprovalRequest, Event, ProcessedWebhook, RequestState
from bot.pipelines.base import InboundUpdate
from bot.ports import ConcurrencyError
from bot.services.deps import Deps
from bot.services.errors import Conflict
from bot.services.jobs import Job

log = logging.getLogger(__name__)

DEPLOYMENT_UPDATED: Final = "deployment.updated"
PROVIDERS: Final = {"gitlab": "GitLab", "github": "GitHub", "jenkins": "Jenkins"}
_ATTEMPTS: Final = 3

_CLOSING_REASONS: Final = {
    "approved": "approved directly in {provider}{by}; the Slack vote is closed",
    "rejected": "rejected directly in {provider}{by}; the Slack vote is closed",
    "canceled": "the deployment was canceled in {provider}{by}",
    "failed": "the deployment failed in {provider} before a decision",
    "running": "the deployment started in {provider} without Quorum's decision{by}",
    "success": "the deployment finished in {provider} without Quorum's decision{by}",
}


@dataclass(frozen=True, slots=True)
class Applied:
    request_id: str | None  # None: Quorum does not track this deployment
    state: str | None
    closed: bool = False  # this update closed the request
    replay: bool = False  # the delivery was already applied


def provider_name(source: str) -> str:
    return PROVIDERS.get(source, source)


def closing_reason(update: InboundUpdate) -> str:
    by = f" by {update.actor}" if update.actor else ""
    template = _CLOSING_REASONS.get(update.status, "{provider} reported the deployment as {status}")
    return template.format(provider=provider_name(update.source), by=by, status=update.status)


def external_status_note(request: ApprovalRequest) -> str | None:
    """The card's line about what the provider last reported, if anything."""
    if not request.external_status:
        return None
    return f"{provider_name(request.source)} reports this deployment as {request.external_status}."


async def apply_update(deps: Deps, update: InboundUpdate) -> Applied:
    """Record the update on the tracked request (event, external status, maybe close it), deduped
    on the delivery id exactly like `open_request`."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            applied = await _apply_once(deps, update)
        except ConcurrencyError:
            # A vote or another update saved the request meanwhile: re-read and apply again.
            if attempt == _ATTEMPTS:
                raise
            continue
        if applied.request_id is not None and not applied.replay:
            deps.wake(Job.ANNOUNCE)
        return applied
    raise AssertionError("unreachable")


async def _apply_once(deps: Deps, update: InboundUpdate) -> Applied:
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        seen = await uow.webhooks.get(update.source, update.delivery_id)
        if seen is not None:
            if seen.body_sha256 != update.body_sha256:
                raise Conflict(
                    f"webhook id {update.delivery_id!r} was already used with a different body"
                )
            earlier = await uow.requests.get(seen.request_id) if seen.request_id else None
            return Applied(
                request_id=seen.request_id,
                state=earlier.state.value if earlier else None,
                replay=True,
            )
        found = await uow.requests.find_by_external_ref(update.source, update.external_ref)
        if found is None:
            log.info("%s update for untracked deployment %s", update.source, update.external_ref)
            return Applied(request_id=None, state=None)
        request = await uow.requests.get_for_update(found.id)
        if request is None:
            return Applied(request_id=None, state=None)
        await uow.webhooks.add(
            ProcessedWebhook(
                source=update.source,
                webhook_id=update.delivery_id,
                body_sha256=update.body_sha256,
                request_id=request.id,
                received_at=now,
            )
        )
        request.external_status = update.status
        await uow.events.append(
            Event(
                kind=DEPLOYMENT_UPDATED,
                at=now,
                request_id=request.id,
                data={
                    "source": update.source,
                    "status": update.status,
                    "provider_actor": update.actor,
                    "detail": update.detail,
                },
            )
        )
        closed = update.closes and request.state is RequestState.PENDING
        if closed:
            request.state = RequestState.CANCELLED
            request.decided_at = now
            request.decision_reason = closing_reason(update)
            request.next_due_at = None  # no reminders or escalations for a closed request
            await uow.events.append(events.request_decided(request, None, now))
        await uow.requests.save(request)
        await uow.commit()
    log.info(
        "%s reports %s for %s%s",
        update.source,
        update.status,
        request.id,
        " (closed)" if closed else "",
    )
    return Applied(request_id=request.id, state=request.state.value, closed=closed)
