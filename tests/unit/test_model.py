"""ApprovalRequest.copy: what the vote writer uses instead of `dataclasses.replace`."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import timedelta

from bot.domain.model import ApprovalRequest, RequestState
from tests.storage.builders import NOW, a_request


def test_copy_is_an_equal_independent_object_with_every_field() -> None:
    # Every field away from its default, so a field the copy forgot would show.
    original = replace(
        a_request("req-copy"),
        callback={"url": "https://ci.example.com/hook"},
        state=RequestState.APPROVED,
        decided_at=NOW,
        decision_reason="quorum met",
        message_ts="1700000000.000100",
        revision=7,
        card_revision=6,
        escalation_level=2,
        break_glass=True,
        sla_started_at=NOW,
        next_due_at=NOW + timedelta(minutes=5),
        reminders_sent=3,
        frozen_until=NOW + timedelta(hours=1),
        review_due_at=NOW + timedelta(days=1),
        reviewed_at=NOW + timedelta(days=2),
        external_ref="group/project#42",
        external_status="running",
    )
    copied = original.copy()

    assert copied == original
    assert copied is not original
    assert type(copied) is ApprovalRequest
    for f in fields(ApprovalRequest):
        assert getattr(copied, f.name) is getattr(original, f.name), f.name  # shallow

    copied.revision += 1
    copied.state = RequestState.REJECTED
    assert (original.revision, original.state) == (7, RequestState.APPROVED)
