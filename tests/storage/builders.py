"""Domain objects with plausible defaults for storage tests, on a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.model import (
    ApprovalRequest,
    Delivery,
    Link,
    RejectMode,
    RequestDetails,
    Requester,
    Risk,
    Rule,
    Vote,
    VoteKind,
)

NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)


def a_request(request_id: str = "req-1", **overrides: Any) -> ApprovalRequest:
    values: dict[str, Any] = {
        "id": request_id,
        "source": "generic",
        "service": "payments-api",
        "environment": "production",
        "risk": Risk.HIGH,
        "owner_team": "payments",
        "channel": "C0PAYMENTS",
        "rules": (
            Rule(name="owner-review", team="payments", approvals=2, origin="environment"),
            Rule(name="security", team="security", approvals=1, origin="risk:high"),
        ),
        "reject_mode": RejectMode.QUORUM,
        "self_approval": False,
        "requester": Requester(email="dev@example.com", github="dev", slack_user="U0DEV"),
        "details": RequestDetails(
            version="1.4.2",
            sha="a" * 40,
            title="Release 1.4.2",
            description="Fixes the rounding bug — and adds € support",
            change_ticket="CHG-42",
            links=(Link(text="diff", url="https://example.com/diff"),),
            event="push",
        ),
        "created_at": NOW,
        "callback": {"url": "https://ci.example.com/hook", "attempt": 1},
    }
    values.update(overrides)
    return ApprovalRequest(**values)


def a_vote(
    voter: str, request_id: str = "req-1", kind: VoteKind = VoteKind.APPROVE, **overrides: Any
) -> Vote:
    values: dict[str, Any] = {
        "request_id": request_id,
        "voter": voter,
        "kind": kind,
        "cast_at": NOW,
    }
    values.update(overrides)
    return Vote(**values)


def a_delivery(
    delivery_id: str, request_id: str = "req-1", due: timedelta = timedelta(0)
) -> Delivery:
    return Delivery(
        id=delivery_id,
        request_id=request_id,
        target="generic",
        payload={"type": "approval.decided", "request_id": request_id, "decision": "approved"},
        created_at=NOW,
        next_attempt_at=NOW + due,
    )
