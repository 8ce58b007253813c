"""Who may vote, the exact refusal sentences, their order, delegation and who a click counts as."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.eligibility import (
    Refusal,
    RefusalCode,
    active_delegators,
    check_vote,
    resolve_voter,
    rule_for,
)
from bot.domain.errors import DomainError, RequestNotFound, VoteRefused
from bot.domain.model import (
    ApprovalRequest,
    Delegation,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
    Vote,
    VoteKind,
)

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
A, R = VoteKind.APPROVE, VoteKind.REJECT

# Alice: payments + sre. Bob, Erin: payments. Carol: sre. Rita requested (and is in payments).
# Mallory: nobody. Dan: not an approver, but approvers delegate to him.
TEAMS: Mapping[str, frozenset[str]] = {
    "payments": frozenset({"U0ALICE", "U0BOB", "U0ERIN", "U0RITA"}),
    "sre": frozenset({"U0ALICE", "U0CAROL"}),
}


def make_request(**changes: object) -> ApprovalRequest:
    request = ApprovalRequest(
        id="req-1",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0PAYMENTS",
        rules=(Rule("owner-review", "payments", 2), Rule("sre-signoff", "sre", 1)),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(github="rita", slack_user="U0RITA"),
        details=RequestDetails(version="1.4.2"),
        created_at=NOW - timedelta(hours=1),
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def vote(
    voter: str, kind: VoteKind = A, *, actor: str | None = None, at: datetime | None = None
) -> Vote:
    return Vote(
        "req-1",
        voter,
        kind,
        at or datetime(2026, 3, 2, 14, 2, tzinfo=UTC),
        reason="broken" if kind is R else None,
        actor=actor,
    )


def check(
    voter: str,
    kind: VoteKind = A,
    *,
    votes: list[Vote] | None = None,
    request: ApprovalRequest | None = None,
    actor: str | None = None,
    frozen_reason: str | None = None,
    reason: str | None = "it breaks checkout",
    require_reason: bool = True,
) -> Refusal | None:
    return check_vote(
        request or make_request(),
        votes or [],
        TEAMS,
        voter=voter,
        kind=kind,
        now=NOW,
        actor=actor,
        frozen_reason=frozen_reason,
        reason=reason,
        require_reason=require_reason,
    )


@pytest.mark.parametrize(
    ("state", "decided_at", "message"),
    [
        pytest.param(
            RequestState.APPROVED,
            datetime(2026, 3, 2, 14, 2, tzinfo=UTC),
            "This request was already approved at 14:02 UTC; your vote was not recorded.",
            id="approved-today",
        ),
        pytest.param(
            RequestState.REJECTED,
            datetime(2026, 2, 27, 9, 5, tzinfo=UTC),
            "This request was already rejected on 27 Feb 2026 at 09:05 UTC; "
            "your vote was not recorded.",
            id="rejected-earlier",
        ),
        pytest.param(
            RequestState.EXPIRED,
            datetime(2026, 3, 2, 13, 0, tzinfo=UTC),
            "This request expired at 13:00 UTC without a decision; your vote was not recorded.",
            id="expired",
        ),
        pytest.param(
            RequestState.CANCELLED,
            None,
            "This request was cancelled; your vote was not recorded.",
            id="cancelled-no-time",
        ),
    ],
)
def test_decided(state: RequestState, decided_at: datetime | None, message: str) -> None:
    request = make_request(state=state, decided_at=decided_at)
    assert check("U0CAROL", request=request) == Refusal(RefusalCode.DECIDED, message)
    assert check("U0CAROL", R, request=request) == Refusal(RefusalCode.DECIDED, message)


@pytest.mark.parametrize(
    ("previous", "voter", "actor", "message"),
    [
        pytest.param(
            vote("U0ALICE"),
            "U0ALICE",
            None,
            "You already approved this request at 14:02 UTC.",
            id="double-click",
        ),
        pytest.param(
            vote("U0ALICE", R),
            "U0ALICE",
            None,
            "You already rejected this request at 14:02 UTC.",
            id="approve-after-reject",
        ),
        pytest.param(
            vote("U0ALICE", actor="U0DAN"),
            "U0ALICE",
            "U0DAN",
            "You already approved this request on behalf of <@U0ALICE> at 14:02 UTC.",
            id="delegate-double-click",
        ),
        pytest.param(
            vote("U0BOB"),
            "U0ALICE",
            "U0BOB",
            "You already voted on this request: you approved it as yourself at 14:02 UTC; "
            "a person counts once per request, as themselves or on behalf of someone.",
            id="delegate-already-voted-as-themselves",
        ),
        pytest.param(
            vote("U0CAROL", actor="U0DAN"),
            "U0ALICE",
            "U0DAN",
            "You already voted on this request: you approved it on behalf of <@U0CAROL> at "
            "14:02 UTC; a person counts once per request, as themselves or on behalf of someone.",
            id="delegate-already-voted-for-someone-else",
        ),
        pytest.param(
            vote("U0ALICE", actor="U0DAN"),
            "U0DAN",
            None,
            "You already voted on this request: you approved it on behalf of <@U0ALICE> at "
            "14:02 UTC; a person counts once per request, as themselves or on behalf of someone.",
            id="delegate-votes-as-themselves-after-voting-for-someone",
        ),
        pytest.param(
            vote("U0ALICE", actor="U0DAN"),
            "U0ALICE",
            None,
            "<@U0DAN> already approved this request on your behalf at 14:02 UTC; "
            "a person counts once per request, as themselves or on behalf of someone.",
            id="delegator-after-their-delegate",
        ),
        pytest.param(
            vote("U0ALICE"),
            "U0ALICE",
            "U0DAN",
            "<@U0ALICE> already approved this request at 14:02 UTC.",
            id="delegate-after-delegator-voted",
        ),
        pytest.param(
            vote("U0ALICE", actor="U0BOB"),
            "U0ALICE",
            "U0DAN",
            "<@U0BOB> already approved this request on behalf of <@U0ALICE> at 14:02 UTC; "
            "a person counts once per request, as themselves or on behalf of someone.",
            id="second-delegate-of-same-delegator",
        ),
        pytest.param(
            vote("U0CAROL", actor="U0ALICE"),
            "U0ALICE",
            "U0DAN",
            "<@U0ALICE> already approved this request on behalf of <@U0CAROL> at 14:02 UTC; "
            "a person counts once per request, as themselves or on behalf of someone.",
            id="delegator-used-their-vote-as-a-delegate",
        ),
    ],
)
def test_already_voted(previous: Vote, voter: str, actor: str | None, message: str) -> None:
    refusal = check(voter, votes=[previous], actor=actor)
    assert refusal == Refusal(RefusalCode.ALREADY_VOTED, message)


def test_votes_on_other_requests_do_not_count() -> None:
    other = replace(vote("U0CAROL"), request_id="req-2")
    assert check("U0CAROL", votes=[other]) is None


@pytest.mark.parametrize("reason", [None, "", "   \n"], ids=["none", "empty", "whitespace"])
def test_reason_required(reason: str | None) -> None:
    assert check("U0CAROL", R, reason=reason) == Refusal(
        RefusalCode.REASON_REQUIRED,
        "A rejection needs a reason: say what is wrong so the requester knows what to fix.",
    )


def test_reason_not_required_for_precheck_or_approval() -> None:
    assert check("U0CAROL", R, reason=None, require_reason=False) is None
    assert check("U0CAROL", A, reason=None) is None


def test_not_eligible() -> None:
    assert check("U0MALLORY") == Refusal(
        RefusalCode.NOT_ELIGIBLE,
        "You are not an approver for payments-api → production. "
        "Eligible: owner-review (payments), sre-signoff (sre).",
    )
    assert check("U0MALLORY", R) == check("U0MALLORY")


def test_not_eligible_on_behalf_and_unknown_service() -> None:
    refusal = check("U0MALLORY", actor="U0DAN", request=make_request(service=None))
    assert refusal == Refusal(
        RefusalCode.NOT_ELIGIBLE,
        "<@U0MALLORY>, on whose behalf you are voting, is not an approver for "
        "this unowned service → production. Eligible: owner-review (payments), sre-signoff (sre).",
    )


@pytest.mark.parametrize(
    ("voter", "kind", "actor", "self_approval", "message"),
    [
        pytest.param(
            "U0RITA",
            A,
            None,
            False,
            "You are the requester of this deployment; production requires someone else's "
            "approval.",
            id="requester-approves",
        ),
        pytest.param(
            "U0RITA",
            A,
            "U0DAN",
            False,
            "<@U0RITA> is the requester of this deployment; production requires someone else's "
            "approval, so you cannot approve on their behalf.",
            id="delegate-approves-for-requester",
        ),
        pytest.param(
            "U0BOB",
            A,
            "U0RITA",
            True,
            "You requested this deployment, so you cannot vote on it, not even on behalf of "
            "<@U0BOB>.",
            id="requester-as-delegate-even-with-self-approval",
        ),
        pytest.param(
            "U0BOB",
            R,
            "U0RITA",
            False,
            "You requested this deployment, so you cannot vote on it, not even on behalf of "
            "<@U0BOB>.",
            id="requester-as-delegate-rejects",
        ),
    ],
)
def test_requester(
    voter: str, kind: VoteKind, actor: str | None, self_approval: bool, message: str
) -> None:
    request = make_request(self_approval=self_approval)
    refusal = check(voter, kind, actor=actor, request=request)
    assert refusal == Refusal(RefusalCode.REQUESTER, message)


@pytest.mark.parametrize(
    ("kind", "self_approval", "requester"),
    [
        pytest.param(A, True, "U0RITA", id="self-approval-allowed"),
        pytest.param(R, False, "U0RITA", id="requester-may-reject-own-request"),
        pytest.param(A, False, None, id="requester-not-resolved"),
    ],
)
def test_requester_allowed(kind: VoteKind, self_approval: bool, requester: str | None) -> None:
    request = make_request(
        self_approval=self_approval, requester=Requester(github="rita", slack_user=requester)
    )
    assert check("U0RITA", kind, request=request) is None


def test_frozen_pauses_approvals_but_not_rejections() -> None:
    assert check("U0CAROL", frozen_reason="Quarter-end financial close.") == Refusal(
        RefusalCode.FROZEN,
        "Deployments to production are frozen: Quarter-end financial close. "
        "Approvals are paused until the freeze ends.",
    )
    assert check("U0CAROL", R, frozen_reason="Quarter-end financial close") is None
    assert check("U0CAROL", frozen_reason=" ") == Refusal(
        RefusalCode.FROZEN,
        "Deployments to production are frozen. Approvals are paused until the freeze ends.",
    )


@pytest.mark.parametrize(
    ("votes", "voter", "message"),
    [
        pytest.param(
            [vote("U0BOB"), vote("U0ERIN")],
            "U0RITA",
            "The rules you can approve for (owner-review) are already satisfied; waiting on sre.",
            id="owner-met-waiting-on-sre",
        ),
        pytest.param(
            [vote("U0BOB"), vote("U0ERIN"), vote("U0CAROL")],
            "U0ALICE",
            "The rules you can approve for (owner-review, sre-signoff) are already satisfied; "
            "every rule is met and the request is being approved.",
            id="everything-met",
        ),
    ],
)
def test_not_needed(votes: list[Vote], voter: str, message: str) -> None:
    request = make_request(self_approval=True)
    assert check(voter, votes=votes, request=request) == Refusal(RefusalCode.NOT_NEEDED, message)


def test_rejection_from_eligible_voter_allowed_when_their_rules_are_met() -> None:
    assert check("U0RITA", R, votes=[vote("U0BOB"), vote("U0ERIN")]) is None


def test_not_needed_unless_an_earlier_approver_can_move() -> None:
    # Alice filled owner-review with Bob; Erin is needed only because Alice can move to sre.
    assert check("U0ERIN", votes=[vote("U0ALICE"), vote("U0BOB")]) is None
    assert rule_for(make_request(), [vote("U0ALICE"), vote("U0BOB")], TEAMS, "U0ERIN") == (
        "owner-review"
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param(
            {"voter": "U0MALLORY", "request": make_request(state=RequestState.APPROVED)},
            RefusalCode.DECIDED,
            id="decided-before-everything",
        ),
        pytest.param(
            {"voter": "U0RITA", "votes": [vote("U0RITA", R)], "kind": R, "reason": ""},
            RefusalCode.ALREADY_VOTED,
            id="already-voted-before-reason",
        ),
        pytest.param(
            {"voter": "U0MALLORY", "kind": R, "reason": " "},
            RefusalCode.REASON_REQUIRED,
            id="reason-before-eligibility",
        ),
        pytest.param(
            {
                "voter": "U0MALLORY",
                "request": make_request(requester=Requester(slack_user="U0MALLORY")),
            },
            RefusalCode.NOT_ELIGIBLE,
            id="not-eligible-before-requester",
        ),
        pytest.param(
            {"voter": "U0RITA", "frozen_reason": "close"},
            RefusalCode.REQUESTER,
            id="requester-before-frozen",
        ),
        pytest.param(
            {"voter": "U0ERIN", "votes": [vote("U0BOB"), vote("U0RITA")], "frozen_reason": "x"},
            RefusalCode.FROZEN,
            id="frozen-before-not-needed",
        ),
    ],
)
def test_check_order(kwargs: dict[str, object], code: RefusalCode) -> None:
    refusal = check(**kwargs)  # type: ignore[arg-type]
    assert refusal is not None
    assert refusal.code is code


def test_check_order_frozen_test_case_is_not_needed_without_freeze() -> None:
    # Guards the table above: without the freeze the same vote is refused as NOT_NEEDED.
    refusal = check("U0ERIN", votes=[vote("U0BOB"), vote("U0RITA")])
    assert refusal is not None
    assert refusal.code is RefusalCode.NOT_NEEDED


@pytest.mark.parametrize(
    ("votes", "voter", "rule"),
    [
        pytest.param([], "U0ALICE", "owner-review", id="first-rule"),
        pytest.param([vote("U0BOB"), vote("U0ERIN")], "U0ALICE", "sre-signoff", id="owner-full"),
        pytest.param([vote("U0CAROL")], "U0MALLORY", None, id="ineligible"),
    ],
)
def test_rule_for(votes: list[Vote], voter: str, rule: str | None) -> None:
    assert rule_for(make_request(), votes, TEAMS, voter) == rule


def delegation(
    delegator: str,
    delegate: str = "U0DAN",
    *,
    envs: tuple[str, ...] = (),
    starts: timedelta = timedelta(hours=-1),
    ends: timedelta = timedelta(hours=1),
    revoked: timedelta | None = None,
    created: timedelta = timedelta(hours=-2),
) -> Delegation:
    return Delegation(
        id=f"d-{delegator}-{delegate}",
        delegator=delegator,
        delegate=delegate,
        environments=envs,
        starts_at=NOW + starts,
        ends_at=NOW + ends,
        created_at=NOW + created,
        revoked_at=None if revoked is None else NOW + revoked,
    )


@pytest.mark.parametrize(
    ("delegations", "expected"),
    [
        pytest.param([delegation("U0ALICE")], ("U0ALICE",), id="active"),
        pytest.param([delegation("U0ALICE", ends=timedelta(0))], (), id="expired-at-end"),
        pytest.param([delegation("U0ALICE", starts=timedelta(minutes=1))], (), id="not-started"),
        pytest.param([delegation("U0ALICE", revoked=timedelta(minutes=-1))], (), id="revoked"),
        pytest.param(
            [delegation("U0ALICE", revoked=timedelta(minutes=5))], ("U0ALICE",), id="revoke-later"
        ),
        pytest.param([delegation("U0ALICE", envs=("staging",))], (), id="other-environment"),
        pytest.param(
            [delegation("U0ALICE", envs=("staging", "production"))], ("U0ALICE",), id="env-listed"
        ),
        pytest.param([delegation("U0ALICE", "U0BOB")], (), id="delegated-to-someone-else"),
        pytest.param(
            [delegation("U0ALICE", "U0BOB"), delegation("U0BOB", "U0DAN")],
            ("U0BOB",),
            id="no-chaining",
        ),
        pytest.param(
            [
                delegation("U0CAROL", created=timedelta(minutes=-5)),
                delegation("U0ALICE", created=timedelta(minutes=-50)),
            ],
            ("U0ALICE", "U0CAROL"),
            id="creation-order",
        ),
        pytest.param([delegation("U0DAN", "U0DAN")], (), id="self-delegation-ignored"),
    ],
)
def test_active_delegators(delegations: list[Delegation], expected: tuple[str, ...]) -> None:
    assert (
        active_delegators(delegations, delegate="U0DAN", environment="production", now=NOW)
        == expected
    )


@pytest.mark.parametrize(
    ("actor", "delegators", "votes", "expected"),
    [
        pytest.param("U0CAROL", ["U0ALICE"], [], "U0CAROL", id="own-vote-first"),
        pytest.param("U0DAN", ["U0ALICE"], [], "U0ALICE", id="non-approver-votes-for-delegator"),
        pytest.param(
            "U0BOB",
            ["U0CAROL"],
            [vote("U0ERIN"), vote("U0RITA")],
            "U0CAROL",
            id="own-rule-met-delegator-needed",
        ),
        pytest.param(
            "U0DAN",
            ["U0ALICE", "U0BOB"],
            [vote("U0ALICE")],
            "U0BOB",
            id="skips-delegator-who-voted",
        ),
        pytest.param(
            "U0DAN", ["U0ALICE"], [vote("U0ALICE")], "U0ALICE", id="refusal-names-the-delegator"
        ),
        pytest.param("U0DAN", [], [], "U0DAN", id="no-delegation"),
        pytest.param("U0CAROL", ["U0BOB"], [vote("U0CAROL")], "U0CAROL", id="actor-counted-once"),
    ],
)
def test_resolve_voter(actor: str, delegators: list[str], votes: list[Vote], expected: str) -> None:
    delegations = [delegation(d, actor) for d in delegators]
    voter = resolve_voter(make_request(), votes, TEAMS, delegations, actor=actor, kind=A, now=NOW)
    assert voter == expected


def test_resolve_voter_then_check_vote_refuses_double_counting() -> None:
    # Carol approved as herself; her delegation from Bob must not give her a second vote.
    votes = [vote("U0CAROL")]
    delegations = [delegation("U0BOB", "U0CAROL")]
    voter = resolve_voter(
        make_request(), votes, TEAMS, delegations, actor="U0CAROL", kind=A, now=NOW
    )
    refusal = check(voter, votes=votes, actor=None if voter == "U0CAROL" else "U0CAROL")
    assert refusal is not None
    assert refusal.code is RefusalCode.ALREADY_VOTED


def test_errors_carry_the_user_facing_message() -> None:
    refusal = Refusal(RefusalCode.FROZEN, "Deployments to production are frozen: close.")
    error = VoteRefused(refusal)
    assert isinstance(error, DomainError)
    assert error.message == refusal.message == str(error)
    assert error.code is RefusalCode.FROZEN
    assert RequestNotFound("req-9").message == "There is no deployment request with id req-9."
