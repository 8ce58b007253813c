"""open_request: a verified pipeline request becomes a routed, recorded approval request."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from bot.domain import events
from bot.domain.model import ApprovalRequest, ProcessedWebhook, Requester, RequestState
from bot.domain.requesters import needs_policy, unmapped_reason, unmapped_rule
from bot.domain.text import is_blank
from bot.identity import resolve_static
from bot.pipelines.base import InboundRequest
from bot.ports import ConcurrencyError, UnitOfWork
from bot.routing import RoutingError, UnknownEnvironment, route
from bot.services.decisions import record_decision
from bot.services.deps import Deps
from bot.services.errors import Conflict, Unprocessable
from bot.services.ids import new_id
from bot.services.jobs import Job
from bot.services.timers import start_sla

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Opened:
    request_id: str
    state: str
    created: bool  # False: a replay of a delivery already taken
    request: ApprovalRequest | None = None  # as stored, when this call created it


async def open_request(deps: Deps, inbound: InboundRequest) -> Opened:
    """Route, dedupe on the delivery id, record the request and its audit event in one
    transaction; the card is posted afterwards by the card syncer (woken here)."""
    replay = await _replay(deps, inbound)
    if replay is not None:
        return replay
    try:
        routed = route(
            deps.policy,
            service=inbound.service,
            repository=inbound.repository,
            environment=inbound.environment,
            risk=inbound.risk,
        )
    except UnknownEnvironment as exc:
        raise Unprocessable(str(exc), known=sorted(deps.policy.environments)) from None
    except RoutingError as exc:
        raise Unprocessable(str(exc)) from None
    # Judged on what a reader sees: "\u200b" is no ticket.
    if routed.require_change_ticket and is_blank(inbound.details.change_ticket):
        raise Unprocessable(
            f"environment {routed.environment!r} requires a change ticket (field change_ticket)"
        )
    requester = await _resolve_requester(deps, inbound.requester)
    rules, refused = routed.rules, None
    if needs_policy(requester, routed.self_approval):
        if routed.unmapped_requester_team is not None:
            rules = (*rules, unmapped_rule(routed.unmapped_requester_team))
        elif inbound.source == "generic":  # the pipeline reads the answer: refuse, post nothing
            raise Unprocessable(unmapped_reason(requester, routed.environment))
        else:  # a provider's webhook answer reaches no one: reject through the provider
            refused = unmapped_reason(requester, routed.environment)
    now = deps.clock.now()
    request = ApprovalRequest(
        id=new_id("req", now),
        source=inbound.source,
        service=routed.service,
        environment=routed.environment,
        risk=routed.risk,
        owner_team=routed.owner_team,
        channel=routed.channel,
        rules=rules,
        reject_mode=routed.reject_mode,
        self_approval=routed.self_approval,
        requester=requester,
        details=inbound.details,
        created_at=now,
        callback=dict(inbound.callback),
        external_ref=inbound.external_ref,
    )
    if routed.service is None:  # shown in the card's "no owner" warning
        request.details = replace(request.details, requested_service=routed.requested_service)
    if refused is not None:
        request.state, request.decided_at, request.decision_reason = (
            RequestState.REJECTED,
            now,
            refused,
        )
    else:
        start_sla(deps.policy, request, now)  # issue 5 starts it when a freeze ends instead
    try:
        async with deps.database.unit_of_work() as uow:
            await uow.webhooks.add(
                ProcessedWebhook(
                    source=inbound.source,
                    webhook_id=inbound.delivery_id,
                    body_sha256=inbound.body_sha256,
                    request_id=request.id,
                    received_at=now,
                )
            )
            await uow.requests.add(request)
            await uow.events.append(events.request_opened(request, now))
            if refused is not None:  # its card says why; the provider is told through the outbox
                await record_decision(deps, uow, request, [], None, now)
            await uow.commit()
    except ConcurrencyError:
        # Another process took the same delivery id between our check and our insert.
        replay = await _replay(deps, inbound)
        if replay is None:
            raise
        return replay
    log.info(
        "opened %s: %s → %s in %s",
        request.id,
        request.service,
        request.environment,
        request.channel,
    )
    deps.wake(Job.ANNOUNCE)
    if refused is not None:
        deps.wake(Job.DELIVERIES)
    return Opened(request_id=request.id, state=request.state.value, created=True, request=request)


async def _replay(deps: Deps, inbound: InboundRequest) -> Opened | None:
    async with deps.database.unit_of_work(read_only=True) as uow:
        seen = await uow.webhooks.get(inbound.source, inbound.delivery_id)
        if seen is None:
            return await _known_deployment(uow, inbound)
        if seen.body_sha256 != inbound.body_sha256:
            raise Conflict(
                f"webhook id {inbound.delivery_id!r} was already used with a different body"
            )
        request = await _request_of(uow, seen)
    state = request.state.value if request is not None else "unknown"
    return Opened(request_id=seen.request_id or "", state=state, created=False)


async def _known_deployment(uow: UnitOfWork, inbound: InboundRequest) -> Opened | None:
    """A provider's deployment already asked about (`external_ref`) is answered with its request,
    also after the delivery log forgot the delivery (`QUORUM_WEBHOOK_RETENTION`): a signed body
    has no expiry, so a replay months later must not open a second request."""
    if inbound.external_ref is None:
        return None
    known = await uow.requests.find_by_external_ref(inbound.source, inbound.external_ref)
    if known is None:
        return None
    return Opened(request_id=known.id, state=known.state.value, created=False)


async def _request_of(uow: UnitOfWork, seen: ProcessedWebhook) -> ApprovalRequest | None:
    return await uow.requests.get(seen.request_id) if seen.request_id else None


async def _resolve_requester(deps: Deps, requester: Requester) -> Requester:
    resolved = resolve_static(deps.policy, requester)
    if resolved.slack_user or not (requester.email and deps.policy.identities.email_lookup):
        return resolved
    try:
        user = await deps.directory.user_by_email(requester.email)
    except Exception:  # Slack unreachable: open the request, but nothing can approve it until
        # a retry (bot/services/requesters.py) settles who the requester is.
        log.warning("users.lookupByEmail failed; the requester is checked again later")
        return replace(resolved, checking=True)
    return replace(resolved, slack_user=user) if user else resolved
