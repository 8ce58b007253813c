"""One request's recorded votes in cast order, indexed for the questions a click asks.

Every check on a click (has this person voted? who has approved, in order? which rules do the
approvals fill?) would otherwise scan and sort all the votes, twice per click (the answer from the
cache, then the check under the lock). A Ballot answers them from indexes kept up to date as votes
are appended, and remembers the last rule assignment so that the next one only places the new
approvers. It is a `Sequence[Vote]`: every domain function that takes votes accepts one, and
builds one from any other sequence (`Ballot.of`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from bot.domain.model import Rule, Vote, VoteKind


@dataclass(frozen=True, slots=True)
class AssignmentMemo:
    """The rule assignment computed for the first `count` approvers, under these rules and teams
    (compared by identity: the caller holds them; owned by `bot.domain.quorum`)."""

    rules: Sequence[Rule]
    eligible: Mapping[str, frozenset[str]]
    count: int
    progress: tuple[Any, ...]


class Ballot(Sequence[Vote]):
    """The votes of one request, in the order they were cast (stable for equal times)."""

    __slots__ = ("_approvals", "_approvers", "_first", "_rejections", "_votes", "assignment")

    def __init__(self, votes: Iterable[Vote] = ()) -> None:
        self._votes: list[Vote] = sorted(votes, key=_cast_at)
        self._reindex()

    @classmethod
    def of(cls, votes: Sequence[Vote]) -> Ballot:
        """`votes` itself when it is a Ballot, else a Ballot of them."""
        return votes if isinstance(votes, Ballot) else cls(votes)

    def _reindex(self) -> None:
        request_ids = {vote.request_id for vote in self._votes}
        if len(request_ids) > 1:
            raise ValueError(f"a ballot holds one request's votes, not {sorted(request_ids)}")
        self._first: dict[str, int] = {}  # person (voter or clicker) -> index of their first vote
        self._approvers: dict[str, None] = {}  # distinct approving voters, in cast order
        self._approvals: list[Vote] = []
        self._rejections: list[Vote] = []
        self.assignment: AssignmentMemo | None = None
        for index, vote in enumerate(self._votes):
            self._index(index, vote)

    def _index(self, index: int, vote: Vote) -> None:
        self._first.setdefault(vote.voter, index)
        if vote.actor is not None:
            self._first.setdefault(vote.actor, index)
        if vote.kind is VoteKind.APPROVE:
            self._approvals.append(vote)
            self._approvers.setdefault(vote.voter, None)
        else:
            self._rejections.append(vote)

    def append(self, vote: Vote) -> None:
        """Record one more vote (kept in cast order; an earlier time re-sorts, which is rare)."""
        if self._votes and vote.request_id != self._votes[0].request_id:
            raise ValueError(f"vote for {vote.request_id} added to {self._votes[0].request_id}")
        if self._votes and vote.cast_at < self._votes[-1].cast_at:
            self._votes.insert(bisect_right(self._votes, vote.cast_at, key=_cast_at), vote)
            self._reindex()
            return
        self._votes.append(vote)
        self._index(len(self._votes) - 1, vote)

    def replace_last(self, vote: Vote) -> None:
        """Swap the last vote for a copy that differs only in what no index holds (its rule)."""
        last = self._votes[-1]
        if (vote.voter, vote.actor, vote.kind, vote.cast_at) != (
            last.voter,
            last.actor,
            last.kind,
            last.cast_at,
        ):
            raise ValueError("replace_last may only change a vote's rule or reason")
        self._votes[-1] = vote
        own = self._approvals if vote.kind is VoteKind.APPROVE else self._rejections
        own[-1] = vote

    def copy(self) -> Ballot:
        twin = Ballot.__new__(Ballot)
        twin._votes = list(self._votes)
        twin._first = dict(self._first)
        twin._approvers = dict(self._approvers)
        twin._approvals = list(self._approvals)
        twin._rejections = list(self._rejections)
        twin.assignment = self.assignment
        return twin

    def previous(self, *people: str) -> Vote | None:
        """The first vote cast by or for any of `people` (as voter or as the one who clicked)."""
        found = [self._first[person] for person in people if person in self._first]
        return self._votes[min(found)] if found else None

    @property
    def approvers(self) -> list[str]:
        """Distinct approving voters in the order they first approved (a fresh list)."""
        return list(self._approvers)

    def has_approved(self, voter: str) -> bool:
        return voter in self._approvers

    @property
    def approvals(self) -> tuple[Vote, ...]:
        return tuple(self._approvals)

    @property
    def rejections(self) -> tuple[Vote, ...]:
        return tuple(self._rejections)

    def rejecters(self) -> set[str]:
        return {vote.voter for vote in self._rejections}

    # --- Sequence ---------------------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> Vote: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Vote]: ...

    def __getitem__(self, index: int | slice) -> Vote | Sequence[Vote]:
        return self._votes[index]

    def __len__(self) -> int:
        return len(self._votes)

    def __iter__(self) -> Iterator[Vote]:
        return iter(self._votes)

    def __repr__(self) -> str:
        return f"Ballot({self._votes!r})"


def _cast_at(vote: Vote) -> Any:
    return vote.cast_at
