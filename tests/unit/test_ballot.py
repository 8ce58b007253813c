"""Ballot: one request's votes in cast order, with the indexes the vote checks use. Every answer
must equal what the plain functions give for a list of the same votes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.ballot import Ballot
from bot.domain.model import RejectMode, Rule, Vote, VoteKind
from bot.domain.quorum import assign, tally, would_help

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def vote(voter: str, minute: int, kind: VoteKind = VoteKind.APPROVE, **extra: str) -> Vote:
    return Vote("req-1", voter, kind, T0 + timedelta(minutes=minute), **extra)  # type: ignore[arg-type]


def test_keeps_cast_order_and_indexes_people() -> None:
    ballot = Ballot([vote("b", 2), vote("a", 1)])
    ballot.append(vote("c", 3, VoteKind.REJECT))
    ballot.append(vote("d", 4, actor="e"))
    assert [v.voter for v in ballot] == ["a", "b", "c", "d"]
    assert ballot.approvers == ["a", "b", "d"]
    assert [v.voter for v in ballot.rejections] == ["c"]
    assert ballot.rejecters() == {"c"}
    assert ballot.previous("e") is ballot[3]  # the delegate who clicked
    assert ballot.previous("zz", "c") is ballot[2]
    assert ballot.previous("zz") is None


def test_a_vote_cast_earlier_is_sorted_in() -> None:
    ballot = Ballot([vote("a", 1), vote("c", 3)])
    ballot.append(vote("b", 2))
    assert [v.voter for v in ballot] == ["a", "b", "c"]
    assert ballot.approvers == ["a", "b", "c"]
    assert ballot.previous("c") is ballot[2]


def test_refuses_votes_of_another_request() -> None:
    ballot = Ballot([vote("a", 1)])
    with pytest.raises(ValueError, match="req-2"):
        ballot.append(Vote("req-2", "b", VoteKind.APPROVE, T0))
    with pytest.raises(ValueError, match="one request"):
        Ballot([vote("a", 1), Vote("req-2", "b", VoteKind.APPROVE, T0)])


def test_copies_are_independent() -> None:
    ballot = Ballot([vote("a", 1)])
    twin = ballot.copy()
    twin.append(vote("b", 2))
    assert len(ballot) == 1
    assert ballot.approvers == ["a"]
    assert twin.approvers == ["a", "b"]


def test_replace_last_changes_only_the_rule() -> None:
    ballot = Ballot([vote("a", 1)])
    ballot.replace_last(vote("a", 1, rule="owner-review"))
    assert ballot[0].rule == "owner-review"
    assert ballot.approvals[0].rule == "owner-review"
    with pytest.raises(ValueError, match="rule"):
        ballot.replace_last(vote("b", 1))


RULES_ONE = (Rule(name="crowd", team="crowd", approvals=3, origin="environment"),)
RULES_TWO = (
    Rule(name="owner", team="owners", approvals=2, origin="environment"),
    Rule(name="sre", team="sre", approvals=1, origin="risk:high"),
)
ELIGIBLE = {
    "crowd": frozenset("abcdefgh"),
    "owners": frozenset("abcd"),
    "sre": frozenset("cdef"),
}


@pytest.mark.parametrize("rules", [RULES_ONE, RULES_TWO])
def test_incremental_answers_equal_the_plain_ones(rules: tuple[Rule, ...]) -> None:
    rng = random.Random(7)
    for _ in range(200):
        ballot = Ballot()
        plain: list[Vote] = []
        for minute in range(rng.randint(1, 9)):
            voter = rng.choice("abcdefghz")
            kind = VoteKind.REJECT if rng.random() < 0.15 else VoteKind.APPROVE
            if ballot.previous(voter) is not None:
                continue
            new = vote(voter, minute, kind)
            ballot.append(new)
            plain.append(new)
            for mode in RejectMode:
                assert tally(rules, ELIGIBLE, ballot, mode) == tally(rules, ELIGIBLE, plain, mode)
            for candidate in "abcdefghz":
                assert would_help(rules, ELIGIBLE, ballot, candidate) == would_help(
                    rules, ELIGIBLE, list(plain), candidate
                )
        approvers = [v.voter for v in plain if v.kind is VoteKind.APPROVE]
        assert tally(rules, ELIGIBLE, ballot, RejectMode.ANY).rules == assign(
            rules, ELIGIBLE, approvers
        )


def test_the_remembered_assignment_is_not_used_for_other_teams() -> None:
    ballot = Ballot([vote("a", 1), vote("b", 2)])
    assert tally(RULES_ONE, ELIGIBLE, ballot, RejectMode.ANY).rules[0].approvers == ("a", "b")
    fewer = {"crowd": frozenset("b")}  # another mapping (a user group changed)
    assert tally(RULES_ONE, fewer, ballot, RejectMode.ANY).rules[0].approvers == ("b",)
