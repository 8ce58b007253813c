"""Turning a tally into a decision on the request (pure; the caller persists and announces)."""

from __future__ import annotations

from datetime import datetime

from bot.domain.model import ApprovalRequest, RequestState, VoteKind
from bot.domain.quorum import Tally


def decision_reason(tally: Tally) -> str:
    """A one-line, human-readable reason recorded with the decision and sent to the pipeline."""
    if tally.outcome is RequestState.REJECTED:
        parts = [
            f"rejected by {vote.voter}" + (f": {vote.reason}" if vote.reason else "")
            for vote in tally.rejections
            if vote.kind is VoteKind.REJECT
        ]
        return "; ".join(parts) or "rejected"
    if tally.outcome is RequestState.APPROVED:
        return "; ".join(
            f"{p.rule.name}: {', '.join(p.approvers) or 'no approvals needed'}" for p in tally.rules
        )
    raise ValueError("the tally has not decided the request")


def apply_outcome(request: ApprovalRequest, tally: Tally, now: datetime) -> bool:
    """Record the tally's outcome on a pending request. True when this decided it."""
    if not request.state.is_open or tally.outcome is None:
        return False
    request.state = tally.outcome
    request.decided_at = now
    request.decision_reason = decision_reason(tally)
    return True
