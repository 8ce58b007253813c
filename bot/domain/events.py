"""Audit-trail event kinds and pure constructors of `Event`s with JSON-ready, secret-free data.

Only state changes are recorded. Refused votes are not: they change nothing, are answered from
cached state without a write, and would let anyone grow the trail by clicking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.domain.model import (
    ApprovalRequest,
    Delegation,
    Delivery,
    Event,
    Freeze,
    RequestState,
    Rule,
    Vote,
)
from bot.domain.quorum import Tally

# Long error texts (a response body echoed into an exception) stay readable and bounded.
_MAX_ERROR_CHARS = 500


class EventKind(StrEnum):
    REQUEST_OPENED = "request.opened"
    VOTE_RECORDED = "vote.recorded"
    VOTE_NOT_COUNTED = "vote.not_counted"
    REQUESTER_RESOLVED = "requester.resolved"
    REQUEST_APPROVED = "request.approved"
    REQUEST_REJECTED = "request.rejected"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_CANCELLED = "request.cancelled"
    CALLBACK_QUEUED = "callback.queued"
    CALLBACK_DELIVERED = "callback.delivered"
    CALLBACK_RETRYING = "callback.retrying"
    CALLBACK_FAILED = "callback.failed"
    CALLBACK_NOT_REQUESTED = "callback.not_requested"
    CARD_POSTED = "card.posted"
    FREEZE_STARTED = "freeze.started"
    FREEZE_ENDED = "freeze.ended"
    DELEGATION_CREATED = "delegation.created"
    DELEGATION_REVOKED = "delegation.revoked"
    BREAKGLASS_INVOKED = "breakglass.invoked"
    REVIEW_RECORDED = "review.recorded"
    ESCALATION_FIRED = "escalation.fired"
    REMINDER_SENT = "reminder.sent"


_DECIDED_KINDS = {
    RequestState.APPROVED: EventKind.REQUEST_APPROVED,
    RequestState.REJECTED: EventKind.REQUEST_REJECTED,
    RequestState.EXPIRED: EventKind.REQUEST_EXPIRED,
    RequestState.CANCELLED: EventKind.REQUEST_CANCELLED,
}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "team": rule.team,
        "approvals": rule.approvals,
        "origin": rule.origin,
    } | ({"widened_by": list(rule.widened_by)} if rule.widened_by else {})


def _error(text: str | None) -> str | None:
    if text is None or len(text) <= _MAX_ERROR_CHARS:
        return text
    return text[: _MAX_ERROR_CHARS - 1] + "…"


def request_opened(request: ApprovalRequest, now: datetime) -> Event:
    """The callback target is left out: a callback URL may carry a token in its query string."""
    requester = request.requester
    return Event(
        kind=EventKind.REQUEST_OPENED,
        at=now,
        request_id=request.id,
        actor=requester.slack_user,
        data={
            "source": request.source,
            "service": request.service,
            "environment": request.environment,
            "risk": request.risk.value,
            "owner_team": request.owner_team,
            "channel": request.channel,
            "rules": [_rule(rule) for rule in request.rules],
            "reject_mode": request.reject_mode.value,
            "self_approval": request.self_approval,
            "requester": {
                "email": requester.email,
                "github": requester.github,
                "slack": requester.slack,
                "slack_user": requester.slack_user,
            },
            "version": request.details.version,
            "sha": request.details.sha,
            "change_ticket": request.details.change_ticket,
        },
    )


def vote_recorded(vote: Vote) -> Event:
    return Event(
        kind=EventKind.VOTE_RECORDED,
        at=vote.cast_at,
        request_id=vote.request_id,
        actor=vote.clicked_by,
        data={
            "voter": vote.voter,
            "on_behalf_of": vote.voter if vote.clicked_by != vote.voter else None,
            "vote": vote.kind.value,
            "reason": vote.reason,
            "rule": vote.rule,
        },
    )


def request_decided(
    request: ApprovalRequest,
    tally: Tally | None,
    now: datetime,
    *,
    actor: str | None = None,
) -> Event:
    """The decision recorded on `request.state` (approved, rejected, expired or cancelled).

    `tally` (when the votes decided it) records who filled which rule and who rejected; `actor` is
    the person who cancelled, when someone did.
    """
    kind = _DECIDED_KINDS.get(request.state)
    if kind is None:
        raise ValueError(f"request {request.id} is {request.state.value}, not decided")
    data: dict[str, Any] = {"state": request.state.value, "reason": request.decision_reason}
    if tally is not None:
        data["rules"] = [
            {"name": p.rule.name, "approvers": list(p.approvers), "met": p.met} for p in tally.rules
        ]
        data["rejected_by"] = [vote.voter for vote in tally.rejections]
    if request.break_glass:
        data["break_glass"] = True
    return Event(kind=kind, at=now, request_id=request.id, actor=actor, data=data)


def card_posted(request_id: str, channel: str, message_ts: str, now: datetime) -> Event:
    return Event(
        kind=EventKind.CARD_POSTED,
        at=now,
        request_id=request_id,
        data={"channel": channel, "message_ts": message_ts},
    )


def _delivery(kind: EventKind, delivery: Delivery, now: datetime) -> Event:
    # The payload and the callback URL stay out of the trail (the decision is already recorded).
    data: dict[str, Any] = {
        "delivery_id": delivery.id,
        "target": delivery.target,
        "attempts": delivery.attempts,
    }
    if kind is EventKind.CALLBACK_RETRYING:
        data["next_attempt_at"] = _iso(delivery.next_attempt_at)
    if delivery.last_error is not None:
        data["error"] = _error(delivery.last_error)
    return Event(kind=kind, at=now, request_id=delivery.request_id, data=data)


def callback_queued(delivery: Delivery) -> Event:
    return _delivery(EventKind.CALLBACK_QUEUED, delivery, delivery.created_at)


def callback_not_requested(request: ApprovalRequest, now: datetime) -> Event:
    """The decided `request` named nowhere to call back: its pipeline reads the decision from
    the status API, so there is no delivery to queue."""
    return Event(
        kind=EventKind.CALLBACK_NOT_REQUESTED,
        at=now,
        request_id=request.id,
        data={"reason": "the request named no callback; its pipeline polls for the decision"},
    )


def callback_delivered(delivery: Delivery, now: datetime) -> Event:
    return _delivery(EventKind.CALLBACK_DELIVERED, delivery, now)


def callback_retrying(delivery: Delivery, now: datetime) -> Event:
    return _delivery(EventKind.CALLBACK_RETRYING, delivery, now)


def callback_failed(delivery: Delivery, now: datetime) -> Event:
    return _delivery(EventKind.CALLBACK_FAILED, delivery, now)


def freeze_started(freeze: Freeze) -> Event:
    return Event(
        kind=EventKind.FREEZE_STARTED,
        at=freeze.created_at,
        actor=freeze.created_by,
        data={
            "freeze_id": freeze.id,
            "environments": list(freeze.environments),
            "services": list(freeze.services),
            "starts_at": _iso(freeze.starts_at),
            "ends_at": _iso(freeze.ends_at),
            "reason": freeze.reason,
        },
    )


def freeze_ended(freeze: Freeze, at: datetime, by: str) -> Event:
    return Event(kind=EventKind.FREEZE_ENDED, at=at, actor=by, data={"freeze_id": freeze.id})


def delegation_created(delegation: Delegation) -> Event:
    return Event(
        kind=EventKind.DELEGATION_CREATED,
        at=delegation.created_at,
        actor=delegation.delegator,
        data={
            "delegation_id": delegation.id,
            "delegator": delegation.delegator,
            "delegate": delegation.delegate,
            "environments": list(delegation.environments),
            "starts_at": _iso(delegation.starts_at),
            "ends_at": _iso(delegation.ends_at),
        },
    )


def delegation_revoked(delegation: Delegation, at: datetime, by: str) -> Event:
    return Event(
        kind=EventKind.DELEGATION_REVOKED,
        at=at,
        actor=by,
        data={"delegation_id": delegation.id, "delegator": delegation.delegator},
    )


def breakglass_invoked(
    request_id: str, actor: str, reason: str, extra_rules: Sequence[Rule], now: datetime
) -> Event:
    return Event(
        kind=EventKind.BREAKGLASS_INVOKED,
        at=now,
        request_id=request_id,
        actor=actor,
        data={"reason": reason, "extra_rules": [_rule(rule) for rule in extra_rules]},
    )


def vote_not_counted(request_id: str, voter: str, why: str, now: datetime) -> Event:
    """A recorded vote that no longer counts when the request would be decided (the voter left
    the team, or Slack no longer vouches for them)."""
    return Event(
        kind=EventKind.VOTE_NOT_COUNTED,
        at=now,
        request_id=request_id,
        actor=voter,
        data={"voter": voter, "why": why},
    )


def requester_resolved(
    request_id: str, slack_user: str | None, outcome: str, now: datetime
) -> Event:
    """The requester's Slack identity was settled after intake (`outcome`: mapped | unmapped)."""
    return Event(
        kind=EventKind.REQUESTER_RESOLVED,
        at=now,
        request_id=request_id,
        data={"slack_user": slack_user, "outcome": outcome},
    )


def review_recorded(request_id: str, actor: str, summary: str, now: datetime) -> Event:
    return Event(
        kind=EventKind.REVIEW_RECORDED,
        at=now,
        request_id=request_id,
        actor=actor,
        data={"summary": summary},
    )


def escalation_fired(
    request_id: str, level: int, team: str, now: datetime, rules: Sequence[str] = ()
) -> Event:
    """`rules`: the rules `team` may also fill from now on (none: it is only notified)."""
    return Event(
        kind=EventKind.ESCALATION_FIRED,
        at=now,
        request_id=request_id,
        data={"level": level, "team": team, "rules": list(rules)},
    )


def reminder_sent(request_id: str, users: Sequence[str], now: datetime) -> Event:
    return Event(
        kind=EventKind.REMINDER_SENT,
        at=now,
        request_id=request_id,
        data={"users": list(users)},
    )
