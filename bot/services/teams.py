"""Who is in a team right now: static members plus the Slack user group, if the team has one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.domain.model import ApprovalRequest, Vote
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


async def _usergroups(
    deps: Deps, names: Iterable[str], *, fresh: bool = False
) -> dict[str, frozenset[str]]:
    """The current members of the user group of each named team that has one (the Directory
    caches them for a few minutes; `fresh` asks Slack now)."""
    groups: dict[str, frozenset[str]] = {}
    for name in names:
        team = deps.policy.team(name)
        if team is not None and team.usergroup:
            groups[name] = await deps.directory.usergroup_members(team.usergroup, fresh=fresh)
    return groups


def _members(
    policy: Policy, names: Iterable[str], groups: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    members: dict[str, frozenset[str]] = {}
    for name in names:
        if policy.team(name) is None:  # the policy changed under an open request: nobody is
            members[name] = frozenset()  # eligible via this team
            continue
        people = _static_members(policy, name)
        group = groups.get(name)
        members[name] = people | group if group is not None else people
    return members


async def team_members(deps: Deps, teams: Iterable[str]) -> Mapping[str, frozenset[str]]:
    """Members of each named team: static members plus its user group's."""
    names = set(teams)
    return _members(deps.policy, names, await _usergroups(deps, names))


# The last answer per (policy, teams), with the user-group member sets it was built from: while
# the policy and those sets (the Directory's cached objects) are unchanged, the same mapping
# object is returned, so the vote checks can reuse what they computed for it.
_REQUEST_MEMBERS: dict[
    tuple[int, frozenset[str]],
    tuple[Policy, tuple[frozenset[str], ...], Mapping[str, frozenset[str]]],
] = {}
_REQUEST_MEMBERS_MAX = 1024


def request_teams(request: ApprovalRequest) -> frozenset[str]:
    """Every team whose members may fill one of `request`'s rules: the rules' own teams and the
    teams escalations widened them by (`Rule.widened_by`)."""
    return frozenset(team for rule in request.rules for team in (rule.team, *rule.widened_by))


async def request_team_members(
    deps: Deps, request: ApprovalRequest, *, fresh: bool = False
) -> Mapping[str, frozenset[str]]:
    """Members of every team that may fill one of `request`'s rules. Which rule a widened team
    may fill is the rules' business (`Rule.admits`): an escalated team is not made a member of
    every rule's team. `fresh`: user groups as Slack has them now (for a decision)."""
    policy = deps.policy
    names = request_teams(request)
    groups = await _usergroups(deps, sorted(names), fresh=fresh)
    sets = tuple(groups.values())
    key = (id(policy), names)
    cached = _REQUEST_MEMBERS.get(key)
    if (
        cached is not None
        and cached[0] is policy
        and len(cached[1]) == len(sets)
        and all(old is new for old, new in zip(cached[1], sets, strict=True))
    ):
        return cached[2]
    result = _members(policy, names, groups)
    if len(_REQUEST_MEMBERS) >= _REQUEST_MEMBERS_MAX:
        _REQUEST_MEMBERS.clear()
    _REQUEST_MEMBERS[key] = (policy, sets, result)
    return result


def known_request_team_members(
    deps: Deps, request: ApprovalRequest, votes: Iterable[Vote]
) -> Mapping[str, frozenset[str]]:
    """Members of `request`'s teams from what Quorum already knows, never asking Slack (for the
    status API: a polling pipeline must get an answer while Slack is down). A user group counts
    with the members Slack last listed; one never listed yet counts the voters whose approval
    was assigned to a rule of its team when they voted (as recorded), so the rule's count is
    what it was then."""
    policy = deps.policy
    names = request_teams(request)
    groups: dict[str, frozenset[str]] = {}
    recorded: dict[str, set[str]] = {}
    rule_teams = {rule.name: (rule.team, *rule.widened_by) for rule in request.rules}
    for vote in votes:
        for filled in rule_teams.get(vote.rule or "", ()):
            recorded.setdefault(filled, set()).add(vote.voter)
    for name in names:
        team = policy.team(name)
        if team is None or not team.usergroup:
            continue
        known = deps.directory.known_usergroup_members(team.usergroup)
        groups[name] = known if known is not None else frozenset(recorded.get(name, ()))
    return _members(policy, names, groups)
