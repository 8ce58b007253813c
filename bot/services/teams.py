"""Who is in a team right now: static members plus the Slack user group, if the team has one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.domain.model import ApprovalRequest
from bot.policy import Policy
from bot.services.deps import Deps

# Static members per (policy, team), built once: the vote path asks on every click.
_STATIC: dict[tuple[int, str], tuple[Policy, frozenset[str]]] = {}


def _static_members(policy: Policy, name: str) -> frozenset[str]:
    key = (id(policy), name)
    cached = _STATIC.get(key)
    if cached is None or cached[0] is not policy:
        team = policy.team(name)
        cached = (policy, frozenset(team.members) if team is not None else frozenset())
        _STATIC[key] = cached
    return cached[1]


async def team_members(deps: Deps, teams: Iterable[str]) -> Mapping[str, frozenset[str]]:
    """Members of each named team (the Directory caches user groups for a few minutes)."""
    members: dict[str, frozenset[str]] = {}
    for name in set(teams):
        team = deps.policy.team(name)
        if team is None:  # the policy changed under an open request: nobody is eligible via it
            members[name] = frozenset()
            continue
        people = _static_members(deps.policy, name)
        if team.usergroup:
            people = people | await deps.directory.usergroup_members(team.usergroup)
        members[name] = people
    return members


def escalated_teams(policy: Policy, request: ApprovalRequest) -> tuple[str, ...]:
    """The teams the SLA ladder has escalated `request` to (read from the current policy)."""
    if request.escalation_level <= 0:
        return ()
    env = policy.environment(request.environment)
    if env is None or env.sla is None:
        return ()
    return tuple(step.to for step in env.sla.escalate[: request.escalation_level])


def with_escalations(
    members: Mapping[str, frozenset[str]], rule_teams: Iterable[str], escalated: Iterable[str]
) -> Mapping[str, frozenset[str]]:
    """Members per rule team, each widened by every escalated team's members: an escalated team
    (a backup approver, a CAB) may fill any rule in addition to the original approvers."""
    extra = frozenset().union(*(members.get(team, frozenset()) for team in escalated))
    if not extra:
        return members
    return {team: members.get(team, frozenset()) | extra for team in rule_teams}


async def request_team_members(
    deps: Deps, request: ApprovalRequest
) -> Mapping[str, frozenset[str]]:
    """Who may vote for each of `request`'s rules, escalations included."""
    rule_teams = {rule.team for rule in request.rules}
    escalated = escalated_teams(deps.policy, request)
    members = await team_members(deps, rule_teams.union(escalated))
    return with_escalations(members, rule_teams, escalated) if escalated else members
