"""Value types of the approval domain: requests, rules, votes, deliveries, freezes, delegations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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
    origin: str = "environment"  # environment | risk:<tier> | break-glass | escalation


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

    @property
    def display(self) -> str:
        if self.slack_user:
            return f"<@{self.slack_user}>"
        return self.github or self.email or self.slack or "unknown"


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


@dataclass(slots=True)
class Delivery:
    """A pipeline callback in the outbox; retried with backoff until delivered or given up."""

    id: str
    request_id: str
    target: str  # the adapter that delivers it: generic | github | gitlab | jenkins
    payload: Mapping[str, Any]
    created_at: datetime
    next_attempt_at: datetime
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
