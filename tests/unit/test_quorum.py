"""Quorum arithmetic: assignment of approvers to rules, tally outcome, and whether a vote helps."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.model import RejectMode, RequestState, Rule, Vote, VoteKind
from bot.domain.quorum import (
    RuleProgress,
    Tally,
    assign,
    assigned_rule,
    eligible_rules,
    filled_slots,
    is_eligible,
    tally,
    would_help,
)

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)

OWNER = Rule("owner-review", "payments", 2)
SRE = Rule("sre-signoff", "sre", 1)
SEC = Rule("security-review", "security", 1)

# Alice is in payments and sre; Bob payments; Carol sre; Dave security and payments; Mallory none.
TEAMS: Mapping[str, frozenset[str]] = {
    "payments": frozenset({"alice", "bob", "dave", "erin"}),
    "sre": frozenset({"alice", "carol"}),
    "security": frozenset({"dave"}),
}


def votes(*spec: tuple[str, VoteKind]) -> list[Vote]:
    return [
        Vote(
            "r1", voter, kind, T0 + timedelta(minutes=i), reason="no" if kind == "reject" else None
        )
        for i, (voter, kind) in enumerate(spec)
    ]


A, R = VoteKind.APPROVE, VoteKind.REJECT


def by_rule(progress: Sequence[RuleProgress]) -> dict[str, tuple[str, ...]]:
    return {p.rule.name: p.approvers for p in progress}


def brute_force_max(
    rules: Sequence[Rule], eligible: Mapping[str, frozenset[str]], approvers: Sequence[str]
) -> int:
    """Maximum filled slots by trying every assignment (the oracle for the matching)."""
    choices = [
        [None, *[i for i, r in enumerate(rules) if person in eligible.get(r.team, frozenset())]]
        for person in dict.fromkeys(approvers)
    ]
    best = 0
    for combo in itertools.product(*choices):
        counts = [0] * len(rules)
        for i in combo:
            if i is not None:
                counts[i] += 1
        if all(c <= max(rule.approvals, 0) for c, rule in zip(counts, rules, strict=True)):
            best = max(best, sum(counts))
    return best


@pytest.mark.parametrize(
    ("rules", "approvers", "expected"),
    [
        pytest.param(
            [OWNER, SRE],
            ["alice", "bob", "carol"],
            {"owner-review": ("alice", "bob"), "sre-signoff": ("carol",)},
            id="alice-fills-owner-while-carol-is-available",
        ),
        pytest.param(
            [OWNER, SRE],
            ["alice", "carol", "bob"],
            {"owner-review": ("alice", "bob"), "sre-signoff": ("carol",)},
            id="alice-first-lands-in-owner-free-slot-first",
        ),
        pytest.param(
            [SRE, OWNER],
            ["alice", "bob", "erin"],
            {"sre-signoff": ("alice",), "owner-review": ("bob", "erin")},
            id="earlier-rule-first-for-free-slots",
        ),
        pytest.param(
            [OWNER, SRE],
            ["alice", "bob", "erin"],
            {"owner-review": ("bob", "erin"), "sre-signoff": ("alice",)},
            id="alice-moves-to-sre-for-erin",
        ),
        pytest.param(
            [SRE, OWNER],
            ["alice", "carol", "bob"],
            {"sre-signoff": ("carol",), "owner-review": ("alice", "bob")},
            id="alice-moves-from-sre-to-owner-for-carol",
        ),
        pytest.param(
            [OWNER, SRE],
            ["bob", "erin", "dave", "alice"],
            {"owner-review": ("bob", "erin"), "sre-signoff": ("alice",)},
            id="capacity-caps-a-rule",
        ),
        pytest.param(
            [OWNER, SRE],
            ["alice", "alice", "bob"],
            {"owner-review": ("alice", "bob"), "sre-signoff": ()},
            id="a-person-counts-once",
        ),
        pytest.param(
            [OWNER, SRE],
            ["mallory", "carol"],
            {"owner-review": (), "sre-signoff": ("carol",)},
            id="ineligible-approver-ignored",
        ),
        pytest.param(
            [SEC, OWNER, SRE],
            ["dave", "alice", "bob", "carol"],
            {
                "security-review": ("dave",),
                "owner-review": ("alice", "bob"),
                "sre-signoff": ("carol",),
            },
            id="three-rules-all-filled",
        ),
        pytest.param(
            [OWNER, SEC],
            ["dave", "bob", "erin"],
            {"owner-review": ("bob", "erin"), "security-review": ("dave",)},
            id="dave-moves-to-security-through-a-chain",
        ),
        pytest.param(
            [Rule("a", "sre", 1), Rule("b", "sre", 1)],
            ["alice", "carol"],
            {"a": ("alice",), "b": ("carol",)},
            id="two-rules-one-team-need-two-people",
        ),
        pytest.param(
            [Rule("none", "payments", 0), SRE],
            ["alice"],
            {"none": (), "sre-signoff": ("alice",)},
            id="zero-approval-rule-takes-nobody",
        ),
        pytest.param(
            [Rule("ghost", "unknown-team", 1)],
            ["alice"],
            {"ghost": ()},
            id="team-missing-from-eligible",
        ),
    ],
)
def test_assign(
    rules: list[Rule], approvers: list[str], expected: dict[str, tuple[str, ...]]
) -> None:
    assert by_rule(assign(rules, TEAMS, approvers)) == expected


def test_assign_issue_example_satisfies_every_slot_in_any_order() -> None:
    for order in itertools.permutations(["alice", "bob", "carol"]):
        progress = assign([OWNER, SRE], TEAMS, order)
        assert all(p.met for p in progress), order
        assert filled_slots(progress) == 3


@pytest.mark.parametrize(
    ("rules", "people"),
    [
        pytest.param([OWNER, SRE], ["alice", "bob", "carol", "erin"], id="owner-sre"),
        pytest.param([SRE, OWNER, SEC], ["dave", "alice", "erin", "carol", "bob"], id="three"),
        pytest.param([SEC, OWNER], ["dave", "bob", "erin", "mallory"], id="security-chain"),
    ],
)
def test_assign_fills_the_same_number_of_slots_in_every_order(
    rules: list[Rule], people: list[str]
) -> None:
    expected = brute_force_max(rules, TEAMS, people)
    for order in itertools.permutations(people):
        assert filled_slots(assign(rules, TEAMS, order)) == expected, order


def test_assign_is_a_maximum_matching_on_random_instances() -> None:
    rng = random.Random(20260302)  # fixed seed: the same instances on every run
    users = [f"u{i}" for i in range(7)]
    for _ in range(300):
        teams = {
            f"t{t}": frozenset(u for u in users if rng.random() < 0.4)
            for t in range(rng.randint(1, 4))
        }
        rules = [
            Rule(f"r{i}", rng.choice(list(teams)), rng.randint(0, 3))
            for i in range(rng.randint(1, 4))
        ]
        approvers = rng.sample(users, rng.randint(0, len(users)))
        progress = assign(rules, teams, approvers)
        assert filled_slots(progress) == brute_force_max(rules, teams, approvers)
        placed = [person for p in progress for person in p.approvers]
        assert len(placed) == len(set(placed)), "someone was assigned twice"
        for p in progress:
            assert len(p.approvers) <= max(p.rule.approvals, 0)
            assert all(person in teams[p.rule.team] for person in p.approvers)


def test_assign_is_deterministic_and_keeps_approval_order_within_a_rule() -> None:
    first = assign([OWNER, SRE], TEAMS, ["erin", "bob", "carol"])
    assert first == assign([OWNER, SRE], TEAMS, ["erin", "bob", "carol"])
    assert by_rule(first)["owner-review"] == ("erin", "bob")


@pytest.mark.parametrize(
    ("mode", "cast", "outcome"),
    [
        pytest.param(RejectMode.ANY, [], None, id="no-votes"),
        pytest.param(RejectMode.ANY, [("alice", A), ("bob", A)], None, id="sre-still-missing"),
        pytest.param(
            RejectMode.ANY,
            [("alice", A), ("bob", A), ("carol", A)],
            RequestState.APPROVED,
            id="all-rules-met",
        ),
        pytest.param(
            RejectMode.ANY,
            [("alice", A), ("carol", A), ("bob", A)],
            RequestState.APPROVED,
            id="all-rules-met-other-order",
        ),
        pytest.param(RejectMode.ANY, [("carol", R)], RequestState.REJECTED, id="any-one-rejects"),
        pytest.param(RejectMode.ANY, [("mallory", R)], None, id="ineligible-rejection-ignored"),
        pytest.param(
            RejectMode.ANY,
            [("alice", A), ("bob", A), ("carol", A), ("erin", R)],
            RequestState.REJECTED,
            id="rejection-wins-over-approval",
        ),
        pytest.param(RejectMode.QUORUM, [("bob", R)], None, id="quorum-one-of-two-owner-rejects"),
        pytest.param(
            RejectMode.QUORUM,
            [("bob", R), ("erin", R)],
            RequestState.REJECTED,
            id="quorum-owner-rule-rejected",
        ),
        pytest.param(
            RejectMode.QUORUM, [("carol", R)], RequestState.REJECTED, id="quorum-sre-rule-rejected"
        ),
        pytest.param(
            RejectMode.QUORUM,
            [("bob", R), ("carol", A), ("alice", A), ("dave", A)],
            RequestState.APPROVED,
            id="quorum-lone-rejection-does-not-block",
        ),
        pytest.param(
            RejectMode.QUORUM,
            [("mallory", R), ("bob", R)],
            None,
            id="quorum-ineligible-rejection-not-counted",
        ),
    ],
)
def test_tally_outcome(
    mode: RejectMode, cast: list[tuple[str, VoteKind]], outcome: RequestState | None
) -> None:
    assert tally([OWNER, SRE], TEAMS, votes(*cast), mode).outcome == outcome


def test_tally_lists_votes_in_cast_order_and_waiting_on() -> None:
    cast = votes(("bob", A), ("mallory", R), ("alice", A))
    # Hand the votes over shuffled: the tally orders them by cast time.
    result = tally([OWNER, SRE], TEAMS, [cast[2], cast[0], cast[1]], RejectMode.QUORUM)
    assert isinstance(result, Tally)
    assert [v.voter for v in result.approvals] == ["bob", "alice"]
    assert [v.voter for v in result.rejections] == ["mallory"]
    assert by_rule(result.rules) == {"owner-review": ("bob", "alice"), "sre-signoff": ()}
    assert result.waiting_on == ("sre",)
    assert (result.filled, result.needed) == (2, 3)


def test_tally_with_no_rules_is_approved_by_arithmetic() -> None:
    assert tally([], TEAMS, [], RejectMode.ANY).outcome is RequestState.APPROVED


@pytest.mark.parametrize(
    ("cast", "voter", "helps"),
    [
        pytest.param([], "bob", True, id="empty-request"),
        pytest.param([("bob", A), ("dave", A)], "erin", False, id="owner-full-erin-not-needed"),
        pytest.param([("alice", A), ("bob", A)], "erin", True, id="alice-can-move-to-sre-for-erin"),
        pytest.param([("alice", A), ("bob", A)], "carol", True, id="carol-fills-sre"),
        pytest.param([("bob", A), ("alice", A), ("carol", A)], "erin", False, id="all-met"),
        pytest.param([("alice", A), ("erin", A)], "carol", True, id="carol-fills-sre-directly"),
        pytest.param([("carol", A), ("alice", A)], "bob", True, id="bob-fills-owner"),
        pytest.param([("alice", A)], "alice", False, id="already-approved"),
        pytest.param([], "mallory", False, id="ineligible"),
        pytest.param([("alice", R)], "bob", True, id="rejections-do-not-fill"),
    ],
)
def test_would_help(cast: list[tuple[str, VoteKind]], voter: str, helps: bool) -> None:
    assert would_help([OWNER, SRE], TEAMS, votes(*cast), voter) is helps


def test_would_help_through_reassignment_moves_the_earlier_approver() -> None:
    # Alice sits in sre (the first rule with a free slot) and Bob in owner. Carol can only take
    # sre, so her approval helps only because Alice can move to owner's remaining slot.
    cast = votes(("alice", A), ("bob", A))
    rules = [SRE, OWNER]
    assert would_help(rules, TEAMS, cast, "erin") is True
    assert assigned_rule(rules, TEAMS, cast, "erin") == "owner-review"
    assert would_help(rules, TEAMS, cast, "carol") is True
    assert assigned_rule(rules, TEAMS, cast, "carol") == "sre-signoff"
    after = assign(rules, TEAMS, ["alice", "bob", "carol"])
    assert by_rule(after) == {"sre-signoff": ("carol",), "owner-review": ("alice", "bob")}


@pytest.mark.parametrize(
    ("cast", "voter", "rule"),
    [
        pytest.param([], "alice", "owner-review", id="first-free-rule"),
        pytest.param([("bob", A), ("erin", A)], "alice", "sre-signoff", id="owner-full"),
        pytest.param([("alice", A), ("bob", A), ("carol", A)], "erin", None, id="nothing-left"),
        pytest.param([("alice", A)], "alice", "owner-review", id="already-approved-keeps-rule"),
        pytest.param([], "mallory", None, id="ineligible"),
    ],
)
def test_assigned_rule(cast: list[tuple[str, VoteKind]], voter: str, rule: str | None) -> None:
    assert assigned_rule([OWNER, SRE], TEAMS, votes(*cast), voter) == rule


def test_eligible_rules_and_is_eligible() -> None:
    assert eligible_rules([OWNER, SRE, SEC], TEAMS, "alice") == (OWNER, SRE)
    assert eligible_rules([OWNER, SRE, SEC], TEAMS, "mallory") == ()
    assert is_eligible([SEC], TEAMS, "dave")
    assert not is_eligible([SRE], TEAMS, "dave")


# --- audit events built from a tally (bot/domain/events.py; no test file of its own yet) ---------


def test_request_decided_event_records_the_tally_as_plain_json() -> None:
    import json
    from dataclasses import replace

    from bot.domain.events import EventKind, request_decided, request_opened, vote_recorded
    from bot.domain.model import ApprovalRequest, RequestDetails, Requester, Risk

    request = ApprovalRequest(
        id="r1",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0PAYMENTS",
        rules=(OWNER, SRE),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(email="rita@example.com", slack_user="rita"),
        details=RequestDetails(version="1.4.2", sha="abc123"),
        created_at=T0,
        callback={"url": "https://ci.example.com/hook?token=SECRET"},
    )
    cast = votes(("alice", A), ("bob", A), ("carol", A))
    result = tally(request.rules, TEAMS, cast, request.reject_mode)
    decided = replace(request, state=RequestState.APPROVED, decided_at=T0, decision_reason="quorum")

    event = request_decided(decided, result, T0)
    assert event.kind == EventKind.REQUEST_APPROVED
    assert str(event.kind) == "request.approved"
    assert event.data["rules"] == [
        {"name": "owner-review", "approvers": ["alice", "bob"], "met": True},
        {"name": "sre-signoff", "approvers": ["carol"], "met": True},
    ]
    opened = request_opened(request, T0)
    assert "SECRET" not in json.dumps(opened.data), "the callback target stays out of the trail"
    assert opened.data["rules"][0] == {
        "name": "owner-review",
        "team": "payments",
        "approvals": 2,
        "origin": "environment",
    }
    delegated = replace(cast[0], actor="dan")
    assert vote_recorded(delegated).actor == "dan"
    assert vote_recorded(delegated).data["on_behalf_of"] == "alice"
    for built in (event, opened, vote_recorded(delegated)):
        json.dumps(built.data)  # must be canonical-JSON ready for the hash chain
    with pytest.raises(ValueError, match="not decided"):
        request_decided(request, result, T0)


def test_a_person_excluded_from_a_rule_cannot_fill_it() -> None:
    """Whoever broke glass is excluded from the break-glass rule though they are in its team."""
    from bot.domain.model import Rule as _Rule

    rules = (_Rule("second-rm", "rm", 1, origin="break-glass", excluded=("U0RM1",)),)
    eligible = {"rm": frozenset({"U0RM1", "U0RM2"})}
    assert assign(rules, eligible, ["U0RM1"])[0].approvers == ()
    assert assign(rules, eligible, ["U0RM1", "U0RM2"])[0].approvers == ("U0RM2",)
