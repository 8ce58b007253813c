"""Value types of the approval domain: requests, rules, votes, deliveries, freezes, delegations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.domain.mrkdwn import Mrkdwn

_NOBODY: frozenset[str] = frozenset()


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_RANK[self]

    @staticmethod
    def highest(*risks: Risk | None) -> Risk:
        """The highest of the given risks (LOW when none is given)."""
        present = [r for r in risks if r is not None]
        return max(present, key=lambda r: r.rank) if present else Risk.LOW


_RISK_RANK = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2}


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self is RequestState.PENDING


class VoteKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class RejectMode(StrEnum):
    ANY = "any"  # one eligible rejection rejects the request
    QUORUM = "quorum"  # a rule is rejected once as many of its approvers reject as it needs


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: a permanent error or the retry window ran out


@dataclass(frozen=True, slots=True)
class Rule:
    """One approval rule of a request, its team resolved (`from: owner` is already the owner)."""

    name: str
    team: str
    approvals: int
    origin: str = "environment"  # environment | risk:<tier> | break-glass | unmapped-requester
    # People who may not fill this rule although they are in its team (whoever broke glass may
    # not also give the second approval that break-glass demands). Binds widened members too.
    excluded: tuple[str, ...] = ()
    # Teams whose members may also fill this rule: the SLA escalation steps that fired and name
    # it (`for_rules`, by default the `from: owner` rules). Stored with the request, so the card,
    # the status API and the vote path read the same answer (bot/domain/sla.py `widen`).
    widened_by: tuple[str, ...] = ()

    def admits(self, user: str, eligible: Mapping[str, frozenset[str]]) -> bool:
        """Whether `user` may fill this rule, given each team's members."""
        if user in self.excluded:
            return False
        if user in eligible.get(self.team, _NOBODY):
            return True
        return bool(self.widened_by) and any(
            user in eligible.get(team, _NOBODY) for team in self.widened_by
        )


@dataclass(frozen=True, slots=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for the deployment, as the pipeline named them, and the Slack user they map to."""

    email: str | None = None
    github: str | None = None
    slack: str | None = None
    slack_user: str | None = None  # resolved Slack user id (None when it could not be resolved)
    gitlab: str | None = None  # GitLab username
    # Slack could not be asked who the requester is yet (users.lookupByEmail failed): the request
    # cannot be approved until a retry resolves it one way or the other.
    checking: bool = False

    @property
    def display(self) -> str:
        if self.slack_user:
            return f"<@{self.slack_user}>"
        return self.github or self.gitlab or self.email or self.slack or "unknown"


@dataclass(frozen=True, slots=True)
class RequestDetails:
    """What the pipeline told us about the deployment; shown on the card, never used for policy."""

    version: str | None = None
    sha: str | None = None
    title: str | None = None
    description: str | None = None
    change_ticket: str | None = None
    links: tuple[Link, ...] = ()
    event: str | None = None
    requested_service: str | None = None  # what the pipeline named, when the policy has no such


@dataclass(slots=True)
class ApprovalRequest:
    """The aggregate. Its outcome is computed from recorded votes; `state` records a decision."""

    id: str
    source: str  # the pipeline adapter that opened it: generic | github | gitlab | jenkins
    service: str | None  # None: the pipeline named a service the policy does not know
    environment: str
    risk: Risk
    owner_team: str | None
    channel: str
    rules: tuple[Rule, ...]
    reject_mode: RejectMode
    self_approval: bool
    requester: Requester
    details: RequestDetails
    created_at: datetime
    callback: Mapping[str, Any] = field(default_factory=dict)  # adapter-specific delivery target
    state: RequestState = RequestState.PENDING
    decided_at: datetime | None = None
    decision_reason: str | None = None
    message_ts: str | None = None
    revision: int = 0  # bumped on every change; the card shows `card_revision`
    card_revision: int = -1
    escalation_level: int = 0
    break_glass: bool = False
    # SLA clock and timers (computed by bot/domain/sla.py from the policy and this history).
    sla_started_at: datetime | None = None  # the clock starts at open, or when a freeze ends
    next_due_at: datetime | None = None  # when the timer sweep must next look at this request
    reminders_sent: int = 0
    frozen_until: datetime | None = None
    # Break-glass post-incident review.
    review_due_at: datetime | None = None
    reviewed_at: datetime | None = None
    # The provider's own identity of the gated deployment (e.g. GitLab project/deployment id),
    # and the last status the provider reported for it.
    external_ref: str | None = None
    external_status: str | None = None

    def copy(self) -> ApprovalRequest:
        """A shallow copy, as `dataclasses.replace(self)` but without re-running `__init__`
        (twice as fast: the vote writer copies a request per vote it records)."""
        new = object.__new__(ApprovalRequest)
        for name in _REQUEST_FIELDS:
            setattr(new, name, getattr(self, name))
        return new


_REQUEST_FIELDS = tuple(f.name for f in fields(ApprovalRequest))


@dataclass(frozen=True, slots=True)
class Vote:
    """A recorded vote. `voter` is the person whose eligibility counts; `actor` clicked the button
    (different only for a delegated vote: actor votes on behalf of voter)."""

    request_id: str
    voter: str
    kind: VoteKind
    cast_at: datetime
    reason: str | None = None
    actor: str | None = None
    rule: str | None = None  # the rule this approval was assigned to when it was cast

    @property
    def clicked_by(self) -> str:
        return self.actor or self.voter


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only audit trail."""

    kind: str
    at: datetime
    request_id: str | None = None
    actor: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An audit-trail entry as stored: its place in the chain and the hashes that link it."""

    seq: int
    event: Event
    prev_hash: str
    hash: str


@dataclass(slots=True)
class Delivery:
    """A pipeline callback in the outbox; retried with backoff until delivered or given up."""

    id: str
    request_id: str
    target: str  # the adapter that delivers it: generic | github | gitlab | jenkins
    payload: Mapping[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    kind: str = "decision"  # decision | progress (a status report while pending)
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Freeze:
    id: str
    environments: tuple[str, ...]  # empty: every environment
    services: tuple[str, ...]  # empty: every service
    starts_at: datetime
    ends_at: datetime | None
    reason: str
    created_by: str
    created_at: datetime
    ended_at: datetime | None = None
    ended_by: str | None = None


@dataclass(frozen=True, slots=True)
class Delegation:
    id: str
    delegator: str
    delegate: str
    environments: tuple[str, ...]  # empty: every environment
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProcessedWebhook:
    source: str
    webhook_id: str
    body_sha256: str
    request_id: str | None
    received_at: datetime


class MessageState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(slots=True)
class OutgoingMessage:
    """A Slack message Quorum must send (reminder DM, escalation mention, announcement), queued
    durably and sent paced per channel. `dedupe_key` makes enqueueing the same step idempotent."""

    id: str
    dedupe_key: str
    channel: str  # a channel id, or a user id for a DM (`dm=True`)
    text: Mrkdwn  # sent as it is: built with bot/domain/mrkdwn.py
    created_at: datetime
    not_before: datetime
    request_id: str | None = None
    dm: bool = False
    thread_ts: str | None = None
    blocks: tuple[Mapping[str, Any], ...] = ()
    state: MessageState = MessageState.PENDING
    attempts: int = 0
    last_error: str | None = None
    sent_at: datetime | None = None
