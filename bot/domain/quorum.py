"""Quorum arithmetic: which recorded approvals fill which rules, and whether the request is decided.

The approval state is computed from the recorded votes every time, never stored as a flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

from bot.domain.ballot import AssignmentMemo, Ballot
from bot.domain.model import RejectMode, RequestState, Rule, Vote


@dataclass(frozen=True, slots=True)
class RuleProgress:
    rule: Rule
    approvers: tuple[str, ...]  # distinct voters whose approval is assigned to this rule

    @property
    def met(self) -> bool:
        return len(self.approvers) >= self.rule.approvals


@dataclass(frozen=True, slots=True)
class Tally:
    rules: tuple[RuleProgress, ...]
    approvals: tuple[Vote, ...]  # every recorded approval, in order cast
    rejections: tuple[Vote, ...]  # every recorded rejection, in order cast
    outcome: RequestState | None  # APPROVED / REJECTED once the votes decide it, else None

    @property
    def waiting_on(self) -> tuple[str, ...]:
        """Teams of the unmet rules, without repeats, in rule order."""
        seen: dict[str, None] = {}
        for progress in self.rules:
            if not progress.met:
                seen.setdefault(progress.rule.team, None)
        return tuple(seen)

    @property
    def filled(self) -> int:
        """Approval slots satisfied so far, over all rules."""
        return filled_slots(self.rules)

    @property
    def needed(self) -> int:
        """Approval slots the rules ask for in total."""
        return sum(max(progress.rule.approvals, 0) for progress in self.rules)


def _members(rule: Rule, eligible: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Who may fill `rule`: its team and the teams an escalation widened it by, less whoever it
    excludes (no copy of the team in the usual case of neither)."""
    team = eligible.get(rule.team, frozenset())
    if rule.widened_by:
        team = team.union(*(eligible.get(other, frozenset()) for other in rule.widened_by))
    return team.difference(rule.excluded) if rule.excluded else team


def for_clicker(rules: Sequence[Rule], voter: str, clicker: str) -> Sequence[Rule]:
    """`rules` with `voter` also excluded from every rule that excludes `clicker`: an exclusion
    binds the person who clicks as well as the person they vote for. The same object when no
    rule excludes the clicker (the common case keeps the tally's memo)."""
    if clicker == voter or not any(clicker in rule.excluded for rule in rules):
        return rules
    return tuple(
        replace(rule, excluded=(*rule.excluded, voter))
        if clicker in rule.excluded and voter not in rule.excluded
        else rule
        for rule in rules
    )


def _with_clickers(rules: Sequence[Rule], ballot: Ballot) -> Sequence[Rule]:
    """The rules as they bind the recorded votes: each delegated vote's voter is excluded where
    the person who clicked is (a person has one vote per request, so this is exact)."""
    if not any(rule.excluded for rule in rules):
        return rules
    for vote in ballot:
        if vote.actor is not None and vote.actor != vote.voter:
            rules = for_clicker(rules, vote.voter, vote.actor)
    return rules


def eligible_rules(
    rules: Sequence[Rule], eligible: Mapping[str, frozenset[str]], user: str
) -> tuple[Rule, ...]:
    """The rules `user` may approve for (via membership of the rule's team), in rule order."""
    return tuple(rule for rule in rules if rule.admits(user, eligible))


def is_eligible(rules: Sequence[Rule], eligible: Mapping[str, frozenset[str]], user: str) -> bool:
    """Whether `user` belongs to the team of at least one of the rules."""
    return any(rule.admits(user, eligible) for rule in rules)


def filled_slots(progress: Sequence[RuleProgress]) -> int:
    """Satisfied approval slots: each rule counts at most the approvals it asks for."""
    return sum(min(len(p.approvers), max(p.rule.approvals, 0)) for p in progress)


def assign(
    rules: Sequence[Rule],
    eligible: Mapping[str, frozenset[str]],
    approvers: Sequence[str],
) -> tuple[RuleProgress, ...]:
    """Assign each distinct approver to at most one rule so that the most approval slots are filled.

    This is a maximum bipartite matching with capacities (a rule takes at most `approvals` people),
    found with augmenting paths: approvers are added in the order they approved, and adding one may
    move earlier approvers to another rule they are eligible for, but never unassigns them. So the
    set of assigned approvers is the earliest possible one, and the result is deterministic: free
    slots are preferred in rule order before anyone is moved, and moves are tried in rule order.
    An approver eligible for no unmet slot (even after moves) is simply left out.
    """
    # Rules are addressed by index: two rules may share a team, or (by mistake) a name.
    order: dict[str, int] = {}
    for user in approvers:
        order.setdefault(user, len(order))
    teams = [_members(rule, eligible) for rule in rules]
    if len(rules) == 1:  # the common case needs no matching: the earliest eligible approvers
        taken = tuple(user for user in order if user in teams[0])[: max(rules[0].approvals, 0)]
        return (RuleProgress(rule=rules[0], approvers=taken),)
    holders: list[list[str]] = [[] for _ in rules]
    capacity = [max(rule.approvals, 0) for rule in rules]
    candidates: dict[str, list[int]] = {
        user: [i for i, team in enumerate(teams) if user in team] for user in order
    }

    def place(user: str, visited: set[int]) -> bool:
        options = candidates[user]
        for i in options:
            if len(holders[i]) < capacity[i]:
                holders[i].append(user)
                return True
        for i in options:
            if i in visited:
                continue
            visited.add(i)
            # Rule i is full and now visited, so the search below can neither loop back into it
            # nor change its holders while we iterate over them.
            for holder in holders[i]:
                if place(holder, visited):
                    holders[i].remove(holder)
                    holders[i].append(user)
                    return True
        return False

    for user in order:
        place(user, set())

    return tuple(
        RuleProgress(rule=rule, approvers=tuple(sorted(holders[i], key=order.__getitem__)))
        for i, rule in enumerate(rules)
    )


def _assignment(
    rules: Sequence[Rule], eligible: Mapping[str, frozenset[str]], ballot: Ballot
) -> tuple[RuleProgress, ...]:
    """`assign` for the ballot's approvers, reusing the ballot's last assignment when it was made
    under the same rules and teams: unchanged, or (one rule) extended by the newer approvers, who
    simply take the free slots in order. Several rules are matched again from scratch."""
    approvers = ballot.approvers
    memo = ballot.assignment
    if memo is not None and memo.rules is rules and memo.eligible is eligible:
        progress = cast(tuple[RuleProgress, ...], memo.progress)
        if memo.count == len(approvers):
            return progress
        if len(rules) == 1:
            rule, taken = rules[0], list(progress[0].approvers)
            for user in approvers[memo.count :]:
                if len(taken) < rule.approvals and rule.admits(user, eligible):
                    taken.append(user)
            progress = (RuleProgress(rule=rule, approvers=tuple(taken)),)
            ballot.assignment = AssignmentMemo(rules, eligible, len(approvers), progress)
            return progress
    progress = assign(rules, eligible, approvers)
    ballot.assignment = AssignmentMemo(rules, eligible, len(approvers), progress)
    return progress


def tally(
    rules: Sequence[Rule],
    eligible: Mapping[str, frozenset[str]],
    votes: Sequence[Vote],
    reject_mode: RejectMode,
) -> Tally:
    """Compute rules progress and the outcome from the recorded votes.

    REJECTED wins over APPROVED when both hold. Rejections by people eligible for none of the rules
    are ignored for the outcome (they are still listed in `rejections`). With `reject_mode` QUORUM
    a rule is rejected once as many of its team's members reject as it needs approvals (at least
    one). A request with no rules at all is APPROVED by arithmetic; the policy decides whether such
    a request can exist.
    """
    ballot = Ballot.of(votes)
    rules = _with_clickers(rules, ballot)
    progress = _assignment(rules, eligible, ballot)
    outcome: RequestState | None = None
    if _is_rejected(rules, eligible, ballot.rejecters(), reject_mode):
        outcome = RequestState.REJECTED
    elif all(p.met for p in progress):
        outcome = RequestState.APPROVED
    return Tally(
        rules=progress, approvals=ballot.approvals, rejections=ballot.rejections, outcome=outcome
    )


def _is_rejected(
    rules: Sequence[Rule],
    eligible: Mapping[str, frozenset[str]],
    rejecters: set[str],
    reject_mode: RejectMode,
) -> bool:
    if not rejecters:
        return False
    if reject_mode is RejectMode.ANY:
        return any(is_eligible(rules, eligible, user) for user in rejecters)
    for rule in rules:
        team = _members(rule, eligible)
        if len(rejecters & team) >= max(rule.approvals, 1):
            return True
    return False


def would_help(
    rules: Sequence[Rule],
    eligible: Mapping[str, frozenset[str]],
    votes: Sequence[Vote],
    voter: str,
) -> bool:
    """Whether an approval by `voter` would fill one more slot, possibly by moving someone else.

    False when the voter already approved (a person counts once per request).
    """
    ballot = Ballot.of(votes)
    if ballot.has_approved(voter):
        return False
    rules = _with_clickers(rules, ballot)
    mine = [i for i, rule in enumerate(rules) if rule.admits(voter, eligible)]
    if not mine:
        return False
    current = _assignment(rules, eligible, ballot)
    if any(not current[i].met for i in mine):
        return True  # a free slot on one of the voter's rules: no re-assignment needed
    before = filled_slots(current)
    after = filled_slots(assign(rules, eligible, [*ballot.approvers, voter]))
    return after > before


def assigned_rule(
    rules: Sequence[Rule],
    eligible: Mapping[str, frozenset[str]],
    votes: Sequence[Vote],
    voter: str,
) -> str | None:
    """The rule name an approval by `voter`, added now, would be assigned to (for `Vote.rule`).

    None when the approval would not be assigned to any rule. Later approvals may move it; the
    tally is always recomputed from the votes, so this is a record of intent, not of state.
    """
    ballot = Ballot.of(votes)
    approvers = ballot.approvers
    if voter not in approvers:
        approvers.append(voter)
    for progress in assign(_with_clickers(rules, ballot), eligible, approvers):
        if voter in progress.approvers:
            return progress.rule.name
    return None
